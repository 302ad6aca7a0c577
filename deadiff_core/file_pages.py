"""Giving back the pages of an mmap-ed weights file once its tensors have been copied.

torch.load(mmap=True) and safetensors' safe_open both map the whole file MAP_PRIVATE (`rw-p` in
/proc/self/maps). Every page the loader reads stays resident in the process next to the copy it made,
so loading costs twice what it keeps. madvise(MADV_DONTNEED) drops those pages; a later read faults
them back in from the file. That is only safe while nothing wrote into the mapping (a written,
copy-on-write page would be lost), so only file mappings without such pages qualify. Tensors in
ordinary memory are left alone (dropping those would zero them), and so are other platforms.
"""
import bisect
import ctypes
import mmap
import re
import sys

_MAPPING = re.compile(r"([0-9a-f]+)-([0-9a-f]+) \S+ [0-9a-f]+ [0-9a-f]+:[0-9a-f]+ (\d+)")


def _madvise_dontneed():
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    # a failure only leaves the pages resident, as without this module: nothing to report
    return lambda start, length: madvise(start, length, mmap.MADV_DONTNEED)


_DONTNEED = _madvise_dontneed()


def _unwritten_file_mappings():
    """(start, end) of this process's file mappings that hold no written (anonymous) page, by address."""
    found, current = [], None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            header = _MAPPING.match(line)
            if header:
                start, end, inode = int(header.group(1), 16), int(header.group(2), 16), int(header.group(3))
                current = (start, end) if inode else None  # inode 0: anonymous memory, heap, stack
            elif current and line.startswith("Anonymous:"):
                if int(line.split()[1]) == 0:
                    found.append(current)
                current = None
    return found


class FilePages:
    """Pages of file mappings that may be given back: take it after opening the file, so that its
    mapping is known (off Linux it releases nothing)."""

    def __init__(self):
        self._ranges = _unwritten_file_mappings() if _DONTNEED else []
        self._starts = [start for start, _ in self._ranges]

    def release(self, tensor):
        """Drop the resident pages of `tensor`'s storage if it lies wholly in one of those mappings."""
        if not self._ranges or tensor.device.type != "cpu":
            return
        storage = tensor.untyped_storage()
        first, last = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
        index = bisect.bisect_right(self._starts, first) - 1
        if index < 0 or last > self._ranges[index][1]:
            return
        # whole pages, widened over the edges: the mapping was never written, so any of its pages
        # may go (one shared with a neighbouring tensor is simply read again)
        page_start = first - first % mmap.PAGESIZE
        page_end = min(self._ranges[index][1], -(-last // mmap.PAGESIZE) * mmap.PAGESIZE)
        _DONTNEED(page_start, page_end - page_start)
