"""Model files whose pickle carries code, one per form in which torch's weights_only load reports it. Each
writes `path` and returns the global the file's pickle calls; unpickled without weights_only, the payloads
that run code create `marker` (so a test can tell that they did not run)."""
import builtins
import os
import pickle
import shlex
import struct

import numpy as np
import torch

TENSORS = {"style_blip.query_tokens": torch.zeros(1, 2, 4)}  # what a real file holds around the payload


class Calls:
    """Unpickling this calls func(*args): what a malicious 'checkpoint' does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch(marker):
    return f"touch {shlex.quote(str(marker))}"


def _python_writes(marker):
    return f"open({str(marker)!r}, 'w').write('pwned')"


def _with_payload(payload):
    return {"state_dict": {**TENSORS, "payload": payload}}


def os_system_zip(path, marker):
    """torch.save (zip) of os.system: pickle names it by its real module, posix (nt on Windows), which torch
    reports as 'GLOBAL posix.system whose module posix is blocked'."""
    torch.save(_with_payload(Calls(os.system, _touch(marker))), path)
    return f"{os.system.__module__}.system"


def os_system_by_name(path, marker):
    """A hand-written pickle (protocol 2) naming os.system itself, as an attacker may write it."""
    command = _touch(marker).encode()
    path.write_bytes(b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(command)) + command + b"\x85R.")
    return "os.system"


def eval_zip(path, marker):
    """torch reports it as 'GLOBAL eval was not an allowed global' (builtins. left out)."""
    torch.save(_with_payload(Calls(builtins.eval, _python_writes(marker))), path)
    return "builtins.eval"


def eval_legacy(path, marker):
    """The legacy (non-zip) torch.save format: a stream of pickles, the object's the fourth."""
    torch.save(_with_payload(Calls(builtins.eval, _python_writes(marker))), path, _use_new_zipfile_serialization=False)
    return "builtins.eval"


def exec_protocol_4_zip(path, marker):
    """Pickle protocol 4 names globals with STACK_GLOBAL, which torch reports only as 'Unsupported operand 149'."""
    torch.save(_with_payload(Calls(builtins.exec, _python_writes(marker))), path, pickle_protocol=4)
    return "builtins.exec"


def exec_plain_pickle(path, marker):
    """A plain pickle (protocol 5, not torch.save's format): again only 'Unsupported operand 149' from torch."""
    path.write_bytes(pickle.dumps(_with_payload(Calls(builtins.exec, _python_writes(marker)))))
    return "builtins.exec"


def numpy_array_zip(path, marker):
    """A numpy array: its pickle calls numpy's _reconstruct (numpy.core.multiarray before numpy 2,
    numpy._core.multiarray since)."""
    torch.save(_with_payload(np.zeros(3)), path)
    reconstruct = np.zeros(1).__reduce__()[0]
    return f"{reconstruct.__module__}.{reconstruct.__name__}"


RUNS_CODE = (os_system_zip, os_system_by_name, eval_zip, eval_legacy, exec_protocol_4_zip, exec_plain_pickle)
