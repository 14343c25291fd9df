"""Recording stand-in of MindSpeed's ``mindspeed/megatron_adaptor.py`` (2.3.0_core_r0.12.1).

The real module imports ``torch_npu.contrib.transfer_to_npu``, parses its switches from
``sys.argv`` (``get_mindspeed_args``) and applies its pre-patches "before import megatron"
(``MindSpeedFeaturesManager.apply_features_pre_patches``), then its megatron patches, which need
an NPU. This one records what the real one depends on -- the megatron modules already imported
and the command line -- and then stops the set-up: beyond this point a real NPU is needed."""

import sys

from torch_npu import _record
from torch_npu.contrib import transfer_to_npu  # noqa: F401  (the real adaptor's first import)


class AdaptorStandInStop(RuntimeError):
    pass


_record.event("megatron_adaptor", argv=sys.argv[1:])
raise AdaptorStandInStop("stand-in adaptor: the rest of the set-up needs an NPU")
