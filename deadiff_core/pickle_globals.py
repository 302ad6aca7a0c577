"""Which globals a checkpoint's pickles call that torch's weights_only load refuses, listed without unpickling
anything: torch reports a refused global in several message forms (or none), the file's pickles name it in one."""
import io
import pickle
import pickletools
import zipfile
from collections import deque

import torch
from torch import _weights_only_unpickler as weights_only_unpickler

# torch.save's legacy (non-zip) format is a stream of pickles: magic number, protocol version, system info, the
# object and its storage keys, then raw storage bytes (not a pickle). A plain pickle file is one pickle.
_LEGACY_PICKLES = 5
_PUT_OPS = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


def _globals_by_pickletools(f):
    """'module.name' of every global in the pickle at f's position, read by the standard library's disassembler
    (f is left after its STOP). For pickle protocols 3+: STACK_GLOBAL takes its names from the two strings before
    it, pushed or fetched from the memo, as Python's pickler writes them."""
    found, strings, memo, top = set(), deque(maxlen=2), {}, None
    for op, arg, _ in pickletools.genops(f):
        if op.name in _PUT_OPS:  # memoizes the top of the stack, which stays
            memo[len(memo) if arg is None else arg] = top
            continue
        if op.name in ("GLOBAL", "INST"):
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings))
        if op.name in _GET_OPS:
            top = memo.get(arg)
        else:
            top = arg if "UNICODE" in op.name else None  # a string, or something STACK_GLOBAL cannot take
        if top is not None:
            strings.append(top)
    return found


def _globals_in_pickle(f):
    """'module.name' of every global the pickle at f's position names, without unpickling it; f is left after
    the pickle. Raises at the end of the file and on bytes that are not a whole pickle."""
    start = f.tell()
    try:
        return weights_only_unpickler.get_globals_in_pkl(f)  # torch's own lister, for the opcodes torch.save writes
    except pickle.UnpicklingError:  # an opcode of pickle protocol 3+, which it does not read
        f.seek(start)
        return _globals_by_pickletools(f)


def _globals_in_legacy_file(path):
    found = set()
    with open(path, "rb") as f:
        for _ in range(_LEGACY_PICKLES):
            try:
                found |= _globals_in_pickle(f)
            except Exception:  # the end of the file, or bytes that are not a pickle: no further pickles
                break
    return found


def _globals_in_zip(path):
    try:
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))  # torch's API: the unsafe ones
    except pickle.UnpicklingError:  # a data.pkl in a pickle protocol torch's lister does not read
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.rpartition("/")[2] == "data.pkl")
            return _globals_in_pickle(io.BytesIO(archive.read(name)))


def unsafe_globals(path):
    """The globals the file's pickles call that torch's weights_only load refuses, sorted, listed without
    unpickling anything: torch's message about them comes in several forms, the file's globals in one. Torch's
    rules: not on its allow-list nor added to it (add_safe_globals), as get_unsafe_globals_in_checkpoint decides,
    and never in a module its unpickler blocks (os, posix, nt, sys)."""
    try:
        names = _globals_in_zip(path) if zipfile.is_zipfile(path) else _globals_in_legacy_file(path)
        allowed = weights_only_unpickler._get_allowed_globals().keys() | weights_only_unpickler._get_user_allowed_globals().keys()
        blocked = set(weights_only_unpickler._blocklisted_modules)
    except Exception:  # a file whose pickles cannot be listed, or a torch without these functions
        return []
    return sorted(n for n in names if n not in allowed or n.rpartition(".")[0] in blocked)
