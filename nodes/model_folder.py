"""models/deadiff: where DEADiffLoader looks for checkpoints (extra_model_paths.yaml may add more).

ComfyUI lists every name in these folders, links that lead nowhere included (os.walk lists a dangling or
looping link as a file); the loader offers only names that resolve to a file and explains the others."""
import errno
import os

import folder_paths

FOLDER = "deadiff"
EXTENSIONS = {".ckpt", ".pt", ".pth", ".safetensors"}
MAX_HOPS = 40  # as Linux's own limit on links followed in one lookup


def register():
    paths, extensions = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    default = os.path.join(folder_paths.models_dir, FOLDER)
    if default not in paths:
        paths.insert(0, default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(extensions) | EXTENSIONS)


def _candidates(name):
    """(folder, path) for each of the folder's paths (models/deadiff and extra_model_paths.yaml's), as
    folder_paths.get_full_path joins them."""
    relative = os.path.relpath(os.path.join("/", name), "/")
    return [(base, os.path.join(base, relative)) for base in folder_paths.get_folder_paths(FOLDER)]


def _is_file(name):
    return any(os.path.isfile(path) for _, path in _candidates(name))


def available():
    """The names in models/deadiff that lead to a file: what the loader's list offers."""
    return [name for name in folder_paths.get_filename_list(FOLDER) if _is_file(name)]


def _shown(base, name):
    default = os.path.join(folder_paths.models_dir, FOLDER)
    return f"models/{FOLDER}/{name}" if os.path.normpath(base) == os.path.normpath(default) else os.path.join(base, name)


def _link_chain(path):
    """The targets a link leads through, made absolute, until one is not a link; (chain, loops)."""
    chain, seen = [], {os.path.abspath(path)}
    while os.path.islink(path) and len(chain) < MAX_HOPS:
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
        if path in seen:
            return chain + [path], True
        chain.append(path)
        seen.add(path)
    return chain, len(chain) >= MAX_HOPS


def _explain_link(base, name, path):
    shown = _shown(base, name)
    try:
        os.stat(path)
    except OSError as e:
        error = e
    else:
        return None  # resolves (to a folder, say): not a broken link
    chain, loops = _link_chain(path)
    if loops or error.errno == errno.ELOOP:
        through = " -> ".join([shown, *chain])
        return (f"{shown} is a link that loops ({through}), so it leads to no file: point it at the checkpoint "
                f"itself (ln -sfn /path/to/the/file.ckpt '{path}') or delete it and pick another file")
    target = chain[-1] if chain else os.readlink(path)
    via = f" (through {', '.join(chain[:-1])})" if len(chain) > 1 else ""
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        why = "which does not exist (moved, renamed, or on a drive that is not mounted)"
    else:
        why = f"which cannot be reached ({error.strerror})"
    return (f"{shown} is a link to {target}{via}, {why}: put the file back there, point the link at where it is "
            f"now (ln -sfn /path/to/the/file '{path}'), or delete the link and pick another file")


def problem(name):
    """None when `name` leads to a file in models/deadiff; else what is wrong and what to do."""
    if not isinstance(name, str) or not name:
        return f"deadiff_name must name a file in models/{FOLDER}, got {name!r}"
    if name in folder_paths.get_filename_list(FOLDER):  # ComfyUI's list: its extensions, links included
        if _is_file(name):
            return None
        for base, path in _candidates(name):
            if os.path.islink(path):
                explained = _explain_link(base, name, path)
                if explained:
                    return explained
    return (f"models/{FOLDER} has no checkpoint {name!r} (a {', '.join(sorted(EXTENSIONS))} file): put it into "
            f"models/{FOLDER} (or a folder extra_model_paths.yaml adds for {FOLDER}), press R in the editor to refresh "
            "the list, or pick another file")
