from torch_npu import _record

_record.event("transfer_to_npu")
