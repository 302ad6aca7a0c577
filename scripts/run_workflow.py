#!/usr/bin/env python3
"""Run a ComfyUI workflow headlessly: queue an API-format workflow JSON on a running ComfyUI
server, wait for it, and print where its outputs went. Standard library only.

    python -m scripts.run_workflow workflow_api.json [--url http://127.0.0.1:8188] [--set 9.seed=42]

from the pack's folder (it imports nothing of the project, so python scripts/run_workflow.py works too).

Save the API format from ComfyUI's menu (Workflow > Export (API)). Exit status 0 on success,
1 when ComfyUI rejects the graph or a node fails (the node and message are printed).
"""
import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def call(url, payload=None, timeout=60):
    """GET (or POST `payload` as JSON) -> (HTTP status, decoded JSON body)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def queue_prompt(url, prompt, client_id=None):
    """POST /prompt -> (prompt_id, None) or (None, readable error). The server reports progress on its
    websocket to the client that `client_id` names."""
    status, body = call(f"{url}/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
    if status == 200:
        return body["prompt_id"], None
    lines = [body.get("error", {}).get("message", str(body))] if isinstance(body, dict) else [str(body)]
    for node_id, info in (body.get("node_errors") or {}).items():
        lines += [f"  node {node_id} ({info.get('class_type')}): {e.get('message')}: {e.get('details')}" for e in info["errors"]]
    return None, "\n".join(lines)


def wait_for(url, prompt_id, timeout):
    """The prompt's /history entry once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, history = call(f"{url}/history/{prompt_id}")
        except TimeoutError:  # a busy machine can stall the server's answer; the deadline still holds
            continue
        if history and prompt_id in history:  # ComfyUI files a prompt in its history when it is done
            return history[prompt_id]
        time.sleep(0.25)
    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s")


def execution_error(entry):
    """The failing node's message, or None when the prompt succeeded."""
    for event, data in entry["status"]["messages"]:
        if event == "execution_error":
            return f"node {data['node_id']} ({data['node_type']}): {data['exception_message'].strip()}"
    return None if entry["status"]["status_str"] == "success" else "the prompt failed"


def run(url, prompt, timeout=600):
    """Queue, wait, return (history entry or None, error or None)."""
    prompt_id, error = queue_prompt(url, prompt)
    if error:
        return None, error
    entry = wait_for(url, prompt_id, timeout)
    return entry, execution_error(entry)


def upload_image(url, name, data):
    """Put image bytes into the server's input folder as `name` (replacing a file of that name);
    returns the value a Load Image node takes."""
    boundary = uuid.uuid4().hex
    fields = [("overwrite", None, b"true"), ("image", name, data)]
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"'.encode()
        + (f'; filename="{filename}"'.encode() if filename else b"") + b"\r\n\r\n" + value + b"\r\n"
        for field, filename, value in fields) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/upload/image", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["name"]


def download(url, item):
    """The bytes of a file a node wrote (an entry of output_files), fetched through /view."""
    query = urllib.parse.urlencode({key: item.get(key, "") for key in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{url}/view?{query}", timeout=60) as response:
        return response.read()


def _apply_overrides(prompt, overrides):
    for item in overrides:
        target, _, value = item.partition("=")
        node_id, _, name = target.partition(".")
        if node_id not in prompt or not name or not _:
            raise SystemExit(f"--set {item!r}: write NODE_ID.input=value with a node id of the workflow")
        try:
            prompt[node_id]["inputs"][name] = json.loads(value)
        except json.JSONDecodeError:
            prompt[node_id]["inputs"][name] = value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="API-format workflow JSON (Workflow > Export (API))")
    parser.add_argument("--url", default="http://127.0.0.1:8188", help="the ComfyUI server")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE", help="override an input")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    with open(args.workflow) as f:
        prompt = json.load(f)
    if "nodes" in prompt and "links" in prompt:
        raise SystemExit(f"{args.workflow} is in the editor's UI format; export it with Workflow > Export (API)")
    _apply_overrides(prompt, args.set)
    entry, error = run(args.url.rstrip("/"), prompt, args.timeout)
    if error:
        print(f"failed: {error}", file=sys.stderr)
        return 1
    for node_id, output in entry["outputs"].items():
        for kind, items in output.items():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item:
                    print(f"{node_id} {kind}: {item.get('type', 'output')}/{item.get('subfolder', '')}/{item['filename']}".replace("//", "/"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
