# The code interpreter's kernel driver, run inside a sandbox by prismd's E2B gateway
# (src/e2b/code-interpreter.ts) as `python3 -u -c <this file>`: one Jupyter kernel per context, driven
# with jupyter_client, talking to prismd as NDJSON on stdin and stdout.
#
# Requests (one JSON object per line): {"id": n, "op": "execute", "code", "context_id"?, "language"?,
# "env_vars"?}, {"id", "op": "create_context", "language"?, "cwd"?}, {"id", "op": "list_contexts"},
# {"id", "op": "restart_context", "context_id"}, {"id", "op": "remove_context", "context_id"},
# {"id", "op": "interrupt", "context_id"}.
# Replies: {"id", "msg": {...}} items of an execution (E2B's NDJSON items: number_of_executions, stdout,
# stderr, result, error), then {"id", "done": true, "result"?: any} or {"id", "error": {"status", "message"}}.
import datetime
import json
import os
import sys
import threading
import uuid

from jupyter_client.manager import KernelManager

OUT = threading.Lock()
CONTEXTS = {}
CONTEXTS_LOCK = threading.Lock()
DEFAULT = {}
DEFAULT_LOCK = threading.Lock()
HOME = os.environ.get("HOME") or os.getcwd()
LANGUAGES = {"python": "python3", "python3": "python3"}

# Jupyter MIME types -> E2B result keys.
MIME = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}


class Failure(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def send(obj):
    line = json.dumps(obj, separators=(",", ":"), default=str)
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class Context:
    def __init__(self, language, cwd):
        kernel = LANGUAGES.get(language)
        if kernel is None:
            raise Failure(400, "language '%s' is not available in this sandbox (python is)" % language)
        if not os.path.isdir(cwd):
            raise Failure(400, "cwd '%s' is not a directory" % cwd)
        self.id = str(uuid.uuid4())
        self.language = "python"
        self.cwd = cwd
        self.lock = threading.Lock()
        self.km = KernelManager(kernel_name=kernel)
        self.km.start_kernel(cwd=cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def info(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def restart(self):
        with self.lock:
            self.km.restart_kernel(now=True)
            self.kc.stop_channels()
            self.kc = self.km.client()
            self.kc.start_channels()
            self.kc.wait_for_ready(timeout=120)

    def close(self):
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)

    def run_silent(self, code):
        msg_id = self.kc.execute(code, silent=True, store_history=False)
        self.wait_idle(msg_id, None)

    def wait_idle(self, msg_id, on_msg):
        while True:
            msg = self.kc.get_iopub_msg(timeout=None)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if on_msg is not None:
                on_msg(msg)
            if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                return

    def execute(self, rid, code, env_vars):
        with self.lock:
            if env_vars:
                # For this execution only, as E2B's server does.
                self.run_silent("import os as __e2b_os\n__e2b_saved = {k: __e2b_os.environ.get(k) for k in %r}\n__e2b_os.environ.update(%r)" % (list(env_vars), env_vars))
            try:
                msg_id = self.kc.execute(code, store_history=True)
                self.wait_idle(msg_id, lambda m: forward(rid, m))
            finally:
                if env_vars:
                    self.run_silent("for __k, __v in __e2b_saved.items():\n    __e2b_os.environ.pop(__k, None) if __v is None else __e2b_os.environ.__setitem__(__k, __v)")


def forward(rid, msg):
    kind = msg["msg_type"]
    c = msg["content"]
    if kind == "execute_input":
        send({"id": rid, "msg": {"type": "number_of_executions", "execution_count": c.get("execution_count")}})
    elif kind == "stream":
        send({"id": rid, "msg": {"type": "stdout" if c.get("name") == "stdout" else "stderr", "text": c.get("text", ""), "timestamp": now()}})
    elif kind in ("execute_result", "display_data"):
        out = {"type": "result", "is_main_result": kind == "execute_result"}
        extra = {}
        for mime, value in (c.get("data") or {}).items():
            key = MIME.get(mime)
            if key is None:
                extra[mime] = value
            else:
                out[key] = value
        if extra:
            out["extra"] = extra
        send({"id": rid, "msg": out})
    elif kind == "error":
        send({"id": rid, "msg": {"type": "error", "name": c.get("ename", ""), "value": c.get("evalue", ""), "traceback": "\n".join(c.get("traceback") or [])}})


def context_for(req):
    cid = req.get("context_id")
    if cid:
        with CONTEXTS_LOCK:
            ctx = CONTEXTS.get(cid)
        if ctx is None:
            raise Failure(404, "Context %s not found" % cid)
        return ctx
    language = req.get("language") or "python"
    # One default context per language, made once even when the first executions come together.
    with DEFAULT_LOCK:
        ctx = DEFAULT.get(language)
        if ctx is None:
            ctx = Context(language, HOME)
            with CONTEXTS_LOCK:
                DEFAULT[language] = ctx
                CONTEXTS[ctx.id] = ctx
    return ctx


def handle(req):
    rid = req.get("id")
    op = req.get("op")
    try:
        if op == "execute":
            context_for(req).execute(rid, req.get("code", ""), req.get("env_vars") or {})
            send({"id": rid, "done": True})
        elif op == "create_context":
            ctx = Context(req.get("language") or "python", req.get("cwd") or HOME)
            with CONTEXTS_LOCK:
                CONTEXTS[ctx.id] = ctx
            send({"id": rid, "done": True, "result": ctx.info()})
        elif op == "list_contexts":
            with CONTEXTS_LOCK:
                listed = [c.info() for c in CONTEXTS.values()]
            send({"id": rid, "done": True, "result": listed})
        elif op == "restart_context":
            context_for(req).restart()
            send({"id": rid, "done": True})
        elif op == "remove_context":
            ctx = context_for(req)
            with CONTEXTS_LOCK:
                CONTEXTS.pop(ctx.id, None)
                for lang, d in list(DEFAULT.items()):
                    if d is ctx:
                        DEFAULT.pop(lang)
            ctx.close()
            send({"id": rid, "done": True})
        elif op == "interrupt":
            context_for(req).km.interrupt_kernel()
            send({"id": rid, "done": True})
        else:
            raise Failure(400, "unknown op %r" % op)
    except Failure as f:
        send({"id": rid, "error": {"status": f.status, "message": f.message}})
    except Exception as e:  # a kernel that cannot start, a broken channel
        send({"id": rid, "error": {"status": 500, "message": "%s: %s" % (type(e).__name__, e)}})


def main():
    send({"ready": True})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError:
            send({"id": None, "error": {"status": 400, "message": "request is not JSON"}})
            continue
        threading.Thread(target=handle, args=(req,), daemon=True).start()
    with CONTEXTS_LOCK:
        for ctx in CONTEXTS.values():
            try:
                ctx.close()
            except Exception:
                pass


main()
