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

import binascii
import collections.abc
import enum
import importlib.util
import inspect
import io
import json
import os
import re
import sys
import traceback
import types

# Modules whose types a result may hold are not imported here (they cost a call's start-up
# time): a value can only be of a type whose module the user's code loaded.


def _imported(name):
    return sys.modules.get(name)


def _is(value, module, *names):
    m = _imported(module)
    return m is not None and isinstance(value, tuple(getattr(m, n) for n in names))


_HARNESS_FILE = os.path.abspath(__file__)
_MAX_DEPTH = 512
# Integers from here on round to an infinite double: no JSON reader of Kiln's takes them.
_INT_LIMIT = 2 ** 1024 - 2 ** 970
_MAX_TEXT = 64 * 1024  # bytes of an error's message, and of its stack
_TRUNCATED = " \u2026 [truncated]"

# Integers of any size have a JSON form (10**5000 included).
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

# What builds and moves frames is captured here, before any user code runs: code that patches
# `json`, `os`, `struct`, `base64` or the builtins changes what it computes itself, never a frame.
try:
    from _json import encode_basestring as _c_encode_basestring
    from _json import make_encoder as _c_make_encoder
    from _json import make_scanner as _c_make_scanner
except ImportError:  # an interpreter without the C accelerator: the pure-Python ones, captured
    import json.scanner

    _c_encode_basestring = json.encoder.py_encode_basestring
    _c_make_encoder = None
    _c_make_scanner = json.scanner.py_make_scanner
_py_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_py_iterencode = _py_encoder.iterencode
_scan_once = _c_make_scanner(json.JSONDecoder())
_WHITESPACE = re.compile(r"[ \t\n\r]*").match
_os_read = os.read
_os_write = os.write
_os_exit = os._exit
_b2a_base64 = binascii.b2a_base64
_len = len
_memoryview = memoryview
_isinstance = isinstance
_str = str
_int = int
_float = float
_float_repr = float.__repr__


# ---------------------------------------------------------------------------------------------
# The channel


def _take_channel():
    try:
        chan = os.dup(3)  # close-on-exec (non-inheritable) since Python 3.4
    except OSError as e:
        sys.stderr.write("kiln harness: fd 3 (the call channel) is not open: %s\n" % e)
        sys.stderr.flush()
        _os_exit(2)
    os.close(3)
    return chan


def _read_exact(fd, n):
    """n bytes, b"" at a clean end-of-file, or None at an end-of-file inside them."""
    chunks = []
    got = 0
    while got < n:
        chunk = _os_read(fd, min(n - got, 1 << 20))
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
    n = int.from_bytes(head, "big")
    body = _read_exact(fd, n) if n else b""
    if body is None or (n and body == b""):
        _protocol_fail("the channel ended inside a frame of %d bytes" % n)
    try:
        frame = _loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        _protocol_fail("a frame is not UTF-8 JSON: %s" % e)
    if not isinstance(frame, dict):
        _protocol_fail("a frame is not a JSON object")
    return frame


def _loads(text):
    """One JSON value, with the decoder captured at start."""
    try:
        value, end = _scan_once(text, _WHITESPACE(text, 0).end())
    except StopIteration as e:
        raise ValueError("no JSON value at character %s" % (e.value,))
    end = _WHITESPACE(text, end).end()
    if end != _len(text):
        raise ValueError("extra data at character %d" % end)
    return value


def _no_default(value):
    raise TypeError("an object of type %s is not plain JSON data" % type(value).__name__)


def _dumps(value):
    """Compact JSON text of plain data, with the encoder captured at start."""
    if _c_make_encoder is not None:
        encode = _c_make_encoder(None, _no_default, _c_encode_basestring, None, ":", ",", False, False, False)
        return "".join(encode(value, 0))
    return "".join(_py_iterencode(value))


def _write_all(fd, data):
    view = _memoryview(data)
    while view:
        n = _os_write(fd, view)
        view = view[n:]


def _truncate(text):
    """text cut to _MAX_TEXT bytes of UTF-8 (at a character), marked when it was cut."""
    if not _isinstance(text, _str):
        text = ""
    if _len(text) * 4 <= _MAX_TEXT:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if _len(data) <= _MAX_TEXT:
        return text
    budget = _MAX_TEXT - _len(_TRUNCATED.encode("utf-8"))
    return data[:budget].decode("utf-8", "ignore") + _TRUNCATED


def _result_frame(call_id, success, payload, source):
    """The result frame, built only of what the harness holds (no object of the user's code)."""
    frame = {"v": 1, "id": call_id, "type": "result", "success": success is True}
    if success is True:
        frame["result"] = payload
    else:
        frame["error"] = {
            "message": _truncate(payload.get("message")),
            "type": payload.get("type") if _isinstance(payload.get("type"), _str) else "InternalError",
            "stack": _truncate(payload.get("stack")),
        }
    frame["signatureSource"] = source
    return frame


def _encode_body(frame):
    try:
        return _dumps(frame).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate in an error's text: replaced, the frame is still UTF-8.
        return _dumps(frame).encode("utf-8", "replace")


def _encode_frame(call_id, success, payload, source, limit=None):
    """The whole frame (length and body); a result that cannot be sent is a SerializationError."""
    failure = None
    body = None
    if success is True:
        try:
            body = _dumps(_result_frame(call_id, True, payload, source)).encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate somewhere in the result: a string with no UTF-8 form.
            failure = "the result contains a str with a lone surrogate, which has no UTF-8 form"
        except ValueError as e:  # an int over sys.get_int_max_str_digits(), a non-finite float
            failure = "the result cannot be turned into JSON: %s" % _safe_str(e)
        except RecursionError:
            failure = "the result is nested too deeply to turn into JSON"
        except Exception as e:
            failure = "the result cannot be turned into JSON: %s" % _exc_text(e)
        if body is not None and limit is not None and _len(body) > limit:
            failure = "the result is %d bytes of JSON, over the limit of %d" % (_len(body), limit)
            body = None
        if failure is not None:
            payload = _error("SerializationError", failure)
            success = False
    if body is None:
        body = _encode_body(_result_frame(call_id, False, payload, source))
        if limit is not None and _len(body) > limit:
            # Even the error does not fit: its message alone, cut to what does.
            message = _str(payload.get("message"))[: max(0, limit // 8 - 64)]
            body = _encode_body(_result_frame(call_id, False, _error(payload.get("type"), message), source))
    return _len(body).to_bytes(4, "big") + body


def _protocol_fail(why):
    try:
        sys.__stderr__.write("kiln harness: %s\n" % why)
        sys.__stderr__.flush()
    except BaseException:
        pass
    _os_exit(2)


def _flush_output():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:  # the code's own streams: whatever they do, the answer goes out
            pass


def _safe_str(value):
    """str(value), or "" when that fails (a __str__ that raises, even SystemExit)."""
    try:
        text = _str(value)
    except BaseException:
        return ""
    return text if _isinstance(text, _str) else ""


def _exc_text(e, sep=": "):
    """"Type: message" of an exception, "Type" when its message is empty or fails."""
    text = _safe_str(e)
    return type(e).__name__ + (sep + text if text else "")


def _safe_repr(value):
    try:
        text = repr(value)
    except BaseException:
        return "<%s>" % type(value).__name__
    return text if _isinstance(text, _str) else "<%s>" % type(value).__name__


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
    try:
        tb = e.__traceback__
        frames = [f for f in traceback.extract_tb(tb) if not _is_harness_frame(f.filename)]
        lines = []
        if frames:
            lines.append("Traceback (most recent call last):\n")
            lines.extend(traceback.format_list(frames))
        lines.extend(traceback.format_exception_only(type(e), e))
        return "".join(lines)
    except BaseException:  # an exception whose formatting raises, even SystemExit
        return ""


def _exception_error(e):
    """The error of an exception of the user's code; never raises, whatever the exception does."""
    name = type(e).__name__
    try:
        if isinstance(e, SyntaxError):
            where = ""
            if _isinstance(e.lineno, _int):
                where = " (line %d" % e.lineno
                if _isinstance(e.offset, _int) and e.offset:
                    where += ", column %d" % e.offset
                where += ")"
            message = "%s%s" % (_safe_str(e.msg), where)
        elif isinstance(e, SystemExit):
            message = "the function called sys.exit(%s)" % _safe_repr(e.code)
        else:
            message = _safe_str(e)
    except BaseException:
        message = ""
    if not message:
        message = name
    return _error(name, message, _user_traceback(e))


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
        try:
            found = hasattr(target, part) if i else part in vars(module)
            if found:
                target = getattr(target, part)
        except BaseException as e:  # a property or __getattr__ of the code that raises
            raise _CallError(**_kw(_exception_error(e)))
        if not found:
            raise _CallError(
                "FunctionNotFound", "function '%s' is not defined in the code" % name
            )
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
    except Exception:  # no signature (some built-ins), or a __signature__ of the code that raises
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


def _b64(b):
    return _b2a_base64(b, newline=False).decode("ascii")


def _key(k, path):
    if isinstance(k, str):
        return str.__str__(k)  # a plain str, whatever its class
    if k is None:
        return "null"
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, float):
        if k != k:
            return "NaN"
        if k in (float("inf"), float("-inf")):
            return "Infinity" if k > 0 else "-Infinity"
        return _float_repr(k)
    if isinstance(k, int) and not isinstance(k, enum.Enum):
        return int.__repr__(k)
    if isinstance(k, (bytes, bytearray)):
        try:
            return bytes(k).decode("utf-8")
        except UnicodeDecodeError:
            return _b64(bytes(k))
    key = str(k)
    return str.__str__(key) if isinstance(key, str) else _safe_repr(k)


def _bytes(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"$base64": _b64(b)}


def _plain(value, path="result", depth=0, active=None):
    if active is None:
        active = set()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a plain str, whatever its class
    if isinstance(value, int) and not isinstance(value, enum.Enum):
        value = int.__int__(value)  # a plain int, whatever its class
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise _Unserializable(
                "the result contains an int of about %d digits at %s, beyond the range of JSON "
                "numbers (a double's, about 1.8e308)" % (int(value.bit_length() * 0.30103) + 1, path)
            )
        return value
    if isinstance(value, float) and not isinstance(value, enum.Enum):
        value = float.__float__(value)
        if value != value or value in (float("inf"), float("-inf")):
            _fail(value, path, "%r has no JSON form" % value)
        return value
    if depth >= _MAX_DEPTH:
        raise _Unserializable("the result is nested deeper than %d levels at %s" % (_MAX_DEPTH, path))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes(bytes(value))
    if _is(value, "datetime", "datetime", "date", "time"):
        return value.isoformat()
    if _is(value, "decimal", "Decimal"):
        if not value.is_finite():
            _fail(value, path, "Decimal('%s') has no JSON form" % value)
        if value == value.to_integral_value():
            return _plain(int(value), path, depth, active)
        number = float(value)
        if number in (float("inf"), float("-inf")):
            _fail(value, path, "Decimal('%s') is beyond the range of JSON numbers" % value)
        return number
    if _is(value, "fractions", "Fraction"):
        return float(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value, path, depth + 1, active)
    if _is(value, "uuid", "UUID") or _is(value, "pathlib", "PurePath"):
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
    dataclasses = _imported("dataclasses")
    if dataclasses is not None and dataclasses.is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name), "%s.%s" % (path, f.name), depth + 1, active)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": _safe_str(value)}
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
        except BaseException as e:  # SystemExit, KeyboardInterrupt and GeneratorExit too
            raise _Unserializable(
                "the result is %s that raised %s while it was turned into JSON"
                % (_describe(value), _exc_text(e, ": "))
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
    """Plain JSON data of the result; raises _CallError (SerializationError) for anything else."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, _MAX_DEPTH * 4 + 200))
    try:
        return _plain(value)
    except RecursionError:
        raise _CallError("SerializationError", "the result is nested too deeply to turn into JSON")
    except _Unserializable as e:
        raise _CallError("SerializationError", _safe_str(e))
    except BaseException as e:  # the code's own to_dict(), __iter__, ... raised, even SystemExit
        raise _CallError(
            "SerializationError",
            "turning the result (a %s) into JSON failed: %s" % (type(value).__name__, _exc_text(e)),
        )
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
    """(success, result or error, signatureSource) of one call frame."""
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
        except BaseException as e:  # SystemExit and KeyboardInterrupt are the code's errors too
            raise _CallError(**_kw(_exception_error(e)))
        return True, _serialize(value), source
    except _CallError as e:
        source = getattr(e, "source", source)
        return False, _error(e.type, e.message, e.stack), source


def _limit(frame):
    limit = frame.get("maxResultBytes")
    if _isinstance(limit, _int) and not _isinstance(limit, bool) and limit > 0:
        return limit
    return None


def main():
    sys.dont_write_bytecode = True  # no __pycache__ beside the user's code
    chan = _take_channel()
    while True:
        frame = _read_frame(chan)
        if frame is None:
            break
        if frame.get("type") != "call":
            continue
        # Everything the result frame is built of is taken before the code runs.
        call_id = frame.get("id")
        limit = _limit(frame)
        fallback_source = "schema" if frame.get("schema") is not None else "convention"
        try:
            success, payload, source = _handle(frame)
        except BaseException as e:  # a fault of the harness itself: still one answer
            success, source = False, fallback_source
            payload = _error("InternalError", "the harness failed: %s" % _exc_text(e))
        if source not in ("schema", "inferred", "convention"):
            source = fallback_source
        try:
            data = _encode_frame(call_id, success, payload, source, limit)
        except BaseException as e:
            payload = _error("InternalError", "the harness failed: %s" % _exc_text(e))
            data = _encode_frame(call_id, False, payload, fallback_source, limit)
        _flush_output()
        _write_all(chan, data)
    _flush_output()
    _os_exit(0)


if __name__ == "__main__":
    main()
