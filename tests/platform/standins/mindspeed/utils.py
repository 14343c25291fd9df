"""Stand-in of MindSpeed 2.3.0_core_r0.12.1 ``mindspeed/utils.py``: its module globals."""

_ACTUAL_SEQ_LEN = None
_POSITION_IDS = None


def get_actual_seq_len():
    return _ACTUAL_SEQ_LEN


def set_actual_seq_len(actual_seq_len):
    global _ACTUAL_SEQ_LEN
    _ACTUAL_SEQ_LEN = actual_seq_len


def get_position_ids():
    return _POSITION_IDS


def set_position_ids(position_ids):
    global _POSITION_IDS
    _POSITION_IDS = position_ids
