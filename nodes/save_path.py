"""Where DEADiff Save Tokens writes: ComfyUI's get_save_image_path (output/, its counter and %date% fields),
with the prefixes it cannot write refused first, in words, and an OS error at write time translated."""
import errno
import os
import re

import folder_paths

NAME_MAX, PATH_MAX = 255, 4096  # Linux's; os.pathconf gives the file system's where it can


class UnwritablePrefix(ValueError):
    pass


def _limit(path, name, default):
    while path and not os.path.isdir(path):
        path = os.path.dirname(path)
    try:
        return os.pathconf(path or os.sep, name)
    except (OSError, ValueError, AttributeError):  # AttributeError: no os.pathconf (Windows)
        return default


def _check(filename_prefix, output_dir, suffix):
    """The reason a prefix cannot be written (None if none is seen before writing)."""
    if "\x00" in filename_prefix:
        return "it contains a NUL byte (\\x00), which no file name may hold"
    try:
        os.fsencode(filename_prefix)
    except UnicodeEncodeError as e:
        return f"it holds {e.object[e.start:e.end]!r}, which this system cannot put in a file name"
    output = os.path.realpath(output_dir)
    relative = os.path.normpath(filename_prefix)
    folder = os.path.realpath(os.path.join(output, os.path.dirname(relative)))
    if os.path.isabs(relative) or os.path.commonpath((output, folder)) != output:
        return f"it is outside the output folder ({output_dir})"
    name_max = _limit(folder, "PC_NAME_MAX", NAME_MAX)
    parts = [p for p in relative.split(os.sep) if p not in ("", ".")]
    for i, part in enumerate(parts):
        shown = part + suffix if i == len(parts) - 1 else part
        if len(os.fsencode(shown)) > name_max:
            return (f"the name {shown[:40]!r}… is {len(os.fsencode(shown))} bytes long (with the counter and "
                    f"extension added), and this file system allows {name_max}")
        below = os.path.join(output, *parts[:i + 1])
        if i < len(parts) - 1 and os.path.exists(below) and not os.path.isdir(below):
            return f"{below} is a file, so it cannot be a folder"
    if len(os.fsencode(os.path.join(folder, parts[-1] if parts else "") + suffix)) >= _limit(folder, "PC_PATH_MAX", PATH_MAX):
        return "the path is longer than this system allows"
    return None


def save_path(filename_prefix, extension, node):
    """(folder, file name, subfolder) from ComfyUI's get_save_image_path; UnwritablePrefix when it cannot be written."""
    output_dir = folder_paths.get_output_directory()
    suffix = f"_00000_{extension}"
    reason = _check(filename_prefix, output_dir, suffix)
    if reason is None:
        try:
            folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
        except OSError as e:  # its os.makedirs
            reason = e.strerror or str(e)
        except Exception as e:  # ComfyUI's own refusal is a bare Exception
            if "outside the output folder" not in str(e):
                raise
            reason = f"it is outside the output folder ({output_dir})"
    if reason is not None:
        raise UnwritablePrefix(refusal(node, os.path.join(output_dir, filename_prefix) + suffix.replace("00000", "NNNNN"),
                                       reason))
    filename = f"{name}_{counter:05}_{extension}"
    return folder, filename, subfolder


def refusal(node, path, reason):
    shown = repr(os.path.normpath(path))
    if len(shown) > 160:
        shown = f"{shown[:100]}…{shown[-50:]}"
    return f"{node}: cannot write {shown}: {reason}; choose another filename_prefix"


def write_error(node, path, error):
    """An OSError, or safetensors' SafetensorError wrapping one ('... (os error 22) ...'), in words; None for others."""
    if isinstance(error, OSError):
        return refusal(node, path, error.strerror or str(error))
    found = re.search(r"\(os error (\d+)\)", str(error))
    if found:
        code = int(found.group(1))
        reason = os.strerror(code) + (" (the name is not one this file system accepts)" if code == errno.EINVAL else "")
        return refusal(node, path, reason)
    return None
