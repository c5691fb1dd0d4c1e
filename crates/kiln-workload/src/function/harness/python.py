# Kiln function harness for Python (protocol kiln-call/1, see docs/functions.md).
#
# Run as `python3 /tmp/.kiln/harness.py` with a connected unix socket as fd 3. It reads call
# frames (4-byte big-endian length + UTF-8 JSON) from fd 3 until end-of-file and answers each with
# exactly one result frame carrying the call's id. Before any user code is loaded, fd 3 is moved to
# a close-on-exec duplicate (os.dup makes non-inheritable descriptors) and fd 3 itself is closed,
# so programs the user's code starts do not inherit the channel. Everything the user's code prints
# goes to its own stdout and stderr; nothing is ever written there by the harness except its own
# fatal protocol complaints on stderr.
#
# Everything the harness defines lives in this file's module (`__main__`); the user's code is
# loaded as its own module, `user_code`.

import base64
import collections.abc
import dataclasses
import datetime
import decimal
import enum
import fractions
import importlib.util
import inspect
import io
import json
import os
import pathlib
import re
import struct
import sys
import traceback
import types
import uuid

_HARNESS_FILE = os.path.abspath(__file__)
_MAX_DEPTH = 512


# ---------------------------------------------------------------------------------------------
# The channel


def _take_channel():
    try:
        chan = os.dup(3)  # close-on-exec (non-inheritable) since Python 3.4
    except OSError as e:
        sys.stderr.write("kiln harness: fd 3 (the call channel) is not open: %s\n" % e)
        sys.stderr.flush()
        os._exit(2)
    os.close(3)
    return chan


def _read_exact(fd, n):
    """n bytes, b"" at a clean end-of-file, or None at an end-of-file inside them."""
    chunks = []
    got = 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return b"" if got == 0 else None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_frame(fd):
    head = _read_exact(fd, 4)
    if head == b"":
        return None
    if head is None:
        _protocol_fail("the channel ended inside a frame's length")
    (n,) = struct.unpack(">I", head)
    body = _read_exact(fd, n) if n else b""
    if body is None or (n and body == b""):
        _protocol_fail("the channel ended inside a frame of %d bytes" % n)
    try:
        frame = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        _protocol_fail("a frame is not UTF-8 JSON: %s" % e)
    if not isinstance(frame, dict):
        _protocol_fail("a frame is not a JSON object")
    return frame


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _encode_frame(frame):
    try:
        text = json.dumps(frame, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        body = text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate somewhere in the result: a string with no UTF-8 form.
        if frame.get("success"):
            frame = dict(frame)
            del frame["result"]
            frame["success"] = False
            frame["error"] = _error(
                "SerializationError",
                "the result contains a str with a lone surrogate, which has no UTF-8 form",
            )
            return _encode_frame(frame)
        text = json.dumps(frame, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        body = text.encode("utf-8", "replace")
    return struct.pack(">I", len(body)) + body


def _protocol_fail(why):
    sys.stderr.write("kiln harness: %s\n" % why)
    sys.stderr.flush()
    os._exit(2)


def _flush_output():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# Errors


class _CallError(Exception):
    """An error the harness reports itself (type, message, stack)."""

    def __init__(self, type_, message, stack=""):
        super().__init__(message)
        self.type = type_
        self.message = message
        self.stack = stack


def _error(type_, message, stack=""):
    return {"message": message, "type": type_, "stack": stack}


def _is_harness_frame(filename):
    if not filename:
        return False
    if filename.startswith("<frozen importlib"):
        return True
    try:
        return os.path.abspath(filename) == _HARNESS_FILE
    except Exception:
        return False


def _user_traceback(e):
    tb = e.__traceback__
    frames = [f for f in traceback.extract_tb(tb) if not _is_harness_frame(f.filename)]
    lines = []
    if frames:
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.format_list(frames))
    lines.extend(traceback.format_exception_only(type(e), e))
    return "".join(lines)


def _exception_error(e):
    if isinstance(e, SyntaxError):
        where = ""
        if e.lineno is not None:
            where = " (line %d" % e.lineno
            if e.offset:
                where += ", column %d" % e.offset
            where += ")"
        message = "%s%s" % (e.msg, where)
    elif isinstance(e, SystemExit):
        message = "the function called sys.exit(%r)" % (e.code,)
    else:
        try:
            message = str(e)
        except Exception:
            message = ""
        if not message:
            message = type(e).__name__
    return _error(type(e).__name__, message, _user_traceback(e))


# ---------------------------------------------------------------------------------------------
# Loading the user's code


_loaded = {}  # (path, content) -> module; the same code is loaded once


def _load(path):
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise _CallError("FileNotFoundError", "cannot read the code at %s: %s" % (path, e.strerror))
    key = (path, content)
    module = _loaded.get(key)
    if module is not None:
        return module
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location("user_code", path)
    if spec is None or spec.loader is None:
        raise _CallError("ImportError", "cannot load %s as Python code" % path)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get("user_code")
    sys.modules["user_code"] = module
    saved_argv = sys.argv
    sys.argv = [path]
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        if previous is not None:
            sys.modules["user_code"] = previous
        else:
            sys.modules.pop("user_code", None)
        raise _CallError(**_kw(_exception_error(e)))
    finally:
        sys.argv = saved_argv
    _loaded.clear()
    _loaded[key] = module
    return module


def _kw(err):
    return {"type_": err["type"], "message": err["message"], "stack": err["stack"]}


def _find(module, name):
    if not isinstance(name, str) or not name:
        raise _CallError("FunctionNotFound", "no function name was given")
    target = module
    parts = name.split(".")
    for i, part in enumerate(parts):
        found = hasattr(target, part) if i else part in vars(module)
        if not found:
            raise _CallError(
                "FunctionNotFound", "function '%s' is not defined in the code" % name
            )
        target = getattr(target, part)
    if not callable(target):
        raise _CallError(
            "FunctionNotFound",
            "'%s' is defined in the code but is a %s, not a function" % (name, type(target).__name__),
        )
    return target


# ---------------------------------------------------------------------------------------------
# Binding


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_matches(kind, value):
    if kind in (None, "any"):
        return True
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "null":
        return value is None
    return True  # a type the harness does not know is not checked


def _bind_schema(schema, fname, args, kwargs):
    """(positional, keywords) from the schema; raises ArgumentError."""
    params = schema.get("params") or []
    if not isinstance(params, list):
        raise _CallError("ArgumentError", "the schema's params is not a list")
    kwargs = dict(kwargs)
    values = []  # (name, present, value)
    for i, p in enumerate(params):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise _CallError("ArgumentError", "schema parameter %d has no name" % (i + 1))
        pname = p["name"]
        has_default = "default" in p
        required = p.get("required", not has_default)
        if i < len(args):
            if pname in kwargs:
                raise _CallError(
                    "ArgumentError", "got multiple values for argument '%s' of %s()" % (pname, fname)
                )
            value, present, given = args[i], True, True
        elif pname in kwargs:
            value, present, given = kwargs.pop(pname), True, True
        elif has_default:
            value, present, given = p["default"], True, False
        elif required:
            raise _CallError(
                "ArgumentError", "missing required argument '%s' of %s()" % (pname, fname)
            )
        else:
            value, present, given = None, False, False
        if given and not _type_matches(p.get("type"), value):
            raise _CallError(
                "ArgumentError",
                "argument '%s' of %s() must be %s %s, got %s"
                % (pname, fname, _article(p.get("type")), p.get("type"), _json_type(value)),
            )
        values.append((pname, present, value))
    extra = list(args[len(params):])
    if extra and not schema.get("variadic"):
        raise _CallError(
            "ArgumentError",
            "%s() takes %d positional argument%s but %d were given (argument %d has no parameter)"
            % (fname, len(params), "" if len(params) == 1 else "s", len(args), len(params) + 1),
        )
    if kwargs and not schema.get("acceptsKwargs"):
        key = next(iter(kwargs))
        raise _CallError(
            "ArgumentError", "%s() got an unexpected keyword argument '%s'" % (fname, key)
        )
    positional = []
    keywords = {}
    gap = False
    for pname, present, value in values:
        if not present:
            gap = True
        elif gap:
            keywords[pname] = value
        else:
            positional.append(value)
    positional.extend(extra)
    keywords.update(kwargs)
    return positional, keywords


def _article(word):
    return "an" if isinstance(word, str) and word[:1] in "aeiou" else "a"


_BIND_MESSAGES = [
    (re.compile(r"missing a required argument: '(.+)'"), "missing required argument '{0}' of {f}()"),
    (
        re.compile(r"missing a required keyword-only argument: '(.+)'"),
        "missing required keyword argument '{0}' of {f}()",
    ),
    (re.compile(r"multiple values for argument '(.+)'"), "got multiple values for argument '{0}' of {f}()"),
    (re.compile(r"got an unexpected keyword argument '(.+)'"), "{f}() got an unexpected keyword argument '{0}'"),
    (
        re.compile(r"'(.+)' parameter is positional only, but was passed as a keyword"),
        "argument '{0}' of {f}() is positional-only and cannot be given by name",
    ),
]


def _bind_message(e, sig, fname, args):
    text = str(e)
    for pattern, template in _BIND_MESSAGES:
        m = pattern.search(text)
        if m:
            return template.format(m.group(1), f=fname)
    if "too many positional arguments" in text:
        n = sum(
            1
            for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        return "%s() takes %d positional argument%s but %d were given (argument %d has no parameter)" % (
            fname,
            n,
            "" if n == 1 else "s",
            len(args),
            n + 1,
        )
    return "%s(): %s" % (fname, text)


def _signature(fn):
    try:
        return inspect.signature(fn)
    except (ValueError, TypeError):
        return None


def _positional_only_by_name(sig, args, kwargs):
    """kwargs naming positional-only parameters right after the args fill them by position."""
    args = list(args)
    kwargs = dict(kwargs)
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    last_only = max((i for i, p in enumerate(params) if p.kind == p.POSITIONAL_ONLY), default=-1)
    for p in params[len(args):last_only + 1]:
        if p.name not in kwargs:
            break
        args.append(kwargs.pop(p.name))
    return args, kwargs


def _bind(fn, fname, args, kwargs, schema):
    """(call, signatureSource); call() runs the function."""
    if schema is not None:
        if not isinstance(schema, dict):
            raise _CallError("ArgumentError", "the schema is not an object")
        args, kwargs = _bind_schema(schema, fname, args, kwargs)
        source = "schema"
    sig = _signature(fn)
    if schema is None:
        source = "inferred" if sig is not None else "convention"
    if sig is None:
        return (lambda: fn(*args, **kwargs)), source
    args, kwargs = _positional_only_by_name(sig, args, kwargs)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        error = _CallError("ArgumentError", _bind_message(e, sig, fname, args))
        error.source = source
        raise error
    return (lambda: fn(*bound.args, **bound.kwargs)), source


# ---------------------------------------------------------------------------------------------
# Results


class _Unserializable(Exception):
    pass


def _describe(value):
    if isinstance(value, types.LambdaType) and getattr(value, "__name__", "") == "<lambda>":
        return "a lambda"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return "a function (%s)" % getattr(value, "__qualname__", getattr(value, "__name__", "?"))
    if isinstance(value, type):
        return "a class (%s)" % value.__qualname__
    if isinstance(value, types.ModuleType):
        return "a module (%s)" % value.__name__
    return "an object of type %s" % type(value).__qualname__


def _fail(value, path, why=None):
    message = "the result contains %s at %s" % (_describe(value), path)
    message += ", " + (why or "which has no JSON form")
    raise _Unserializable(message)


def _key(k, path):
    if isinstance(k, str):
        return k
    if k is None:
        return "null"
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, float):
        return json.dumps(k)
    if isinstance(k, (bytes, bytearray)):
        try:
            return bytes(k).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(bytes(k)).decode("ascii")
    return str(k)


def _bytes(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"$base64": base64.b64encode(b).decode("ascii")}


def _plain(value, path="result", depth=0, active=None):
    if active is None:
        active = set()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, enum.Enum):
        return int(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            _fail(value, path, "%r has no JSON form" % value)
        return float(value)
    if depth >= _MAX_DEPTH:
        raise _Unserializable("the result is nested deeper than %d levels at %s" % (_MAX_DEPTH, path))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes(bytes(value))
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            _fail(value, path, "Decimal('%s') has no JSON form" % value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, fractions.Fraction):
        return float(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value, path, depth + 1, active)
    if isinstance(value, (uuid.UUID, pathlib.PurePath)):
        return str(value)
    if isinstance(value, complex):
        _fail(value, path)
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                          types.BuiltinMethodType, type, types.ModuleType, io.IOBase,
                          types.CodeType, types.FrameType)) or inspect.iscoroutine(value):
        _fail(value, path)
    ident = id(value)
    if ident in active:
        raise _Unserializable("the result contains a cycle: %s (a %s) contains itself" % (path, type(value).__name__))
    active.add(ident)
    try:
        return _plain_container(value, path, depth, active)
    finally:
        active.discard(ident)


def _plain_container(value, path, depth, active):
    if isinstance(value, dict) or isinstance(value, collections.abc.Mapping):
        out = {}
        for k, v in value.items():
            out[_key(k, path)] = _plain(v, "%s[%r]" % (path, k), depth + 1, active)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, "%s[%d]" % (path, i), depth + 1, active) for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        try:
            items = sorted(value)
        except TypeError:
            items = list(value)
        return [_plain(v, "%s[%d]" % (path, i), depth + 1, active) for i, v in enumerate(items)]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, type):
        return _plain(to_dict(), path + ".to_dict()", depth + 1, active)
    if dataclasses.is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name), "%s.%s" % (path, f.name), depth + 1, active)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value)}
    if isinstance(value, collections.abc.Iterable) and not hasattr(value, "__dict__"):
        return _plain_iterable(value, path, depth, active)
    fields = _public_fields(value)
    if fields is not None:
        if not fields and isinstance(value, collections.abc.Iterable):
            return _plain_iterable(value, path, depth, active)
        return {k: _plain(v, "%s.%s" % (path, k), depth + 1, active) for k, v in fields.items()}
    if isinstance(value, collections.abc.Iterable):
        return _plain_iterable(value, path, depth, active)
    _fail(value, path)


def _plain_iterable(value, path, depth, active):
    out = []
    iterator = iter(value)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return out
        except Exception as e:
            raise _Unserializable(
                "the result is %s that raised %s while it was turned into JSON: %s"
                % (_describe(value), type(e).__name__, e)
            )
        out.append(_plain(item, "%s[%d]" % (path, len(out)), depth + 1, active))


def _public_fields(value):
    fields = None
    d = getattr(value, "__dict__", None)
    if isinstance(d, dict):
        fields = {k: v for k, v in d.items() if isinstance(k, str) and not k.startswith("_")}
    slots = []
    for cls in type(value).__mro__:
        s = cls.__dict__.get("__slots__", ())
        slots.extend([s] if isinstance(s, str) else list(s))
    for name in slots:
        if name.startswith("_") or name in ("__dict__", "__weakref__"):
            continue
        if hasattr(value, name):
            fields = fields if fields is not None else {}
            fields[name] = getattr(value, name)
    return fields


def _serialize(value):
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, _MAX_DEPTH * 4 + 200))
    try:
        return _plain(value)
    except RecursionError:
        raise _Unserializable("the result is nested too deeply to turn into JSON")
    finally:
        sys.setrecursionlimit(limit)


# ---------------------------------------------------------------------------------------------
# A call


def _await(value):
    if inspect.isawaitable(value):
        import asyncio

        async def wait():
            return await value

        return asyncio.run(wait())
    return value


def _handle(frame):
    reply = {"v": 1, "id": frame.get("id"), "type": "result"}
    schema = frame.get("schema")
    source = "schema" if schema is not None else "convention"
    try:
        if frame.get("v", 1) != 1:
            raise _CallError("ProtocolError", "unsupported protocol version %r" % (frame.get("v"),))
        args = frame.get("args") or []
        kwargs = frame.get("kwargs") or {}
        if not isinstance(args, list):
            raise _CallError("ArgumentError", "args is not a list")
        if not isinstance(kwargs, dict):
            raise _CallError("ArgumentError", "kwargs is not an object")
        name = frame.get("function")
        module = _load(frame.get("file") or "/tmp/.kiln/user_code.py")
        fn = _find(module, name)
        call, source = _bind(fn, name, args, kwargs, schema)
        try:
            value = _await(call())
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            raise _CallError(**_kw(_exception_error(e)))
        try:
            result = _serialize(value)
        except _Unserializable as e:
            raise _CallError("SerializationError", str(e))
        except Exception as e:
            raise _CallError(
                "SerializationError",
                "turning the result (a %s) into JSON failed: %s: %s" % (type(value).__name__, type(e).__name__, e),
            )
        reply["success"] = True
        reply["result"] = result
    except _CallError as e:
        source = getattr(e, "source", source)
        reply["success"] = False
        reply["error"] = _error(e.type, e.message, e.stack)
    reply["signatureSource"] = source
    return reply


def main():
    sys.dont_write_bytecode = True  # no __pycache__ beside the user's code
    chan = _take_channel()
    while True:
        frame = _read_frame(chan)
        if frame is None:
            break
        if frame.get("type") != "call":
            continue
        try:
            reply = _handle(frame)
        except Exception as e:  # a fault of the harness itself: still one answer
            reply = {"v": 1, "id": frame.get("id"), "type": "result", "success": False,
                     "error": _error("InternalError", "the harness failed: %s: %s" % (type(e).__name__, e)),
                     "signatureSource": "schema" if frame.get("schema") is not None else "convention"}
        data = _encode_frame(reply)
        _flush_output()
        _write_all(chan, data)
    _flush_output()
    os._exit(0)


if __name__ == "__main__":
    main()
