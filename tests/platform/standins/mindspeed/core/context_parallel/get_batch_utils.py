"""Stand-in of MindSpeed 2.3.0_core_r0.12.1 ``core/context_parallel/get_batch_utils.py``: its
own copy of the actual_seq_len global (read by the reset-attention-mask adaptor)."""

_ACTUAL_SEQ_LEN = None


def get_actual_seq_len():
    return _ACTUAL_SEQ_LEN


def set_actual_seq_len(actual_seq_len):
    global _ACTUAL_SEQ_LEN
    _ACTUAL_SEQ_LEN = actual_seq_len
