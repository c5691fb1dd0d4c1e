<?php
// Kiln function harness for PHP (protocol kiln-call/1, see docs/functions.md).
//
// Run as `php /tmp/.kiln/harness.php` with a connected unix socket as fd 3. It reads call frames
// (4-byte big-endian length + UTF-8 JSON) from fd 3 until end-of-file and answers each with exactly
// one result frame carrying the call's id. Everything the user's code prints goes to its own stdout
// and stderr; PHP's notices, warnings and error messages go to stderr, never into the result.
//
// fd 3 and child processes: PHP reaches a descriptor only through `php://fd/3`, which opens a
// plain dup() of it (not close-on-exec), and has no function to close a raw descriptor or set
// FD_CLOEXEC. When the FFI extension is usable (the CLI allows it unless `ffi.enable` is off), the
// harness marks its duplicate close-on-exec and closes fd 3 itself through libc's fcntl and close.
// Without FFI both descriptors stay open and programs the user's code starts (exec, system,
// proc_open, …) inherit them; such a program writing into them only corrupts the channel, which
// Kiln reports as a crash.
//
// The user's code (the call frame's `file`, /tmp/.kiln/user_code.php) is loaded with `require` in
// the global scope, so its top-level variables are globals as in any PHP script. Code without an
// opening tag gets one: the harness writes `<?php ` and the code (on the same line, so line numbers
// hold) to `<name>.tagged.php` beside it and loads that, leaving the original untouched. The
// harness defines no global functions or classes: everything lives in Kiln\Harness\H.

namespace Kiln\Harness;

final class CallError extends \Exception
{
    public string $type;
    public string $stackText;
    public ?string $source = null;

    public function __construct(string $type, string $message, string $stack = '')
    {
        parent::__construct($message);
        $this->type = $type;
        $this->stackText = $stack;
    }
}

final class Unserializable extends \Exception
{
}

final class H
{
    private const MAX_DEPTH = 512;
    /** Bytes of an error's message, and of its stack. */
    private const MAX_TEXT = 65536;
    private const TRUNCATED = " \u{2026} [truncated]";
    private const FATAL = E_ERROR | E_PARSE | E_CORE_ERROR | E_COMPILE_ERROR | E_USER_ERROR | E_RECOVERABLE_ERROR;

    /** @var resource */
    private static $chan;
    /** The call frame being answered, or null. */
    private static ?array $frame = null;
    /** A path `require` must load before the call is answered. */
    public static ?string $load = null;
    private static ?array $loadKey = null;
    private static ?array $loaded = null;
    private static ?array $loadError = null;
    private static string $loadedFile = '';
    private static string $derivedFile = '';
    /** Where the signature of the call being answered came from, once it is bound. */
    private static ?string $source = null;
    /** The line of this file that calls the user's function (see answer()). */
    private static int $callLine = 0;

    // --------------------------------------------------------------------------------------------
    // Start and the channel

    public static function start(): void
    {
        error_reporting(E_ALL);
        ini_set('display_errors', 'stderr');
        ini_set('log_errors', '0');
        ini_set('html_errors', '0');
        ini_set('serialize_precision', '-1');
        set_error_handler([self::class, 'onError']);
        register_shutdown_function([self::class, 'onShutdown']);
        self::takeChannel();
    }

    public static function onError(int $no, string $message, string $file = '', int $line = 0): bool
    {
        if (!(error_reporting() & $no)) {
            return false; // silenced with @
        }
        $labels = [
            E_WARNING => 'Warning', E_NOTICE => 'Notice', E_DEPRECATED => 'Deprecated',
            E_USER_WARNING => 'Warning', E_USER_NOTICE => 'Notice', E_USER_DEPRECATED => 'Deprecated',
            E_USER_ERROR => 'Fatal error', E_RECOVERABLE_ERROR => 'Recoverable error', E_STRICT => 'Strict Standards',
        ];
        $label = $labels[$no] ?? 'Error';
        if ($no === E_USER_ERROR) {
            return false; // fatal: PHP reports it and ends, and the shutdown function answers the call
        }
        // The code may have closed STDERR: the message is dropped then, nothing is thrown.
        try {
            if (is_resource(\STDERR)) {
                @fwrite(\STDERR, 'PHP ' . $label . ': ' . self::mapPaths($message) . ' in ' . self::mapPaths($file) . ' on line ' . $line . "\n");
            }
        } catch (\Throwable $e) {
        }
        return true;
    }

    private static function takeChannel(): void
    {
        $ffi = self::libc();
        $before = $ffi ? self::openFds($ffi) : [];
        $chan = @fopen('php://fd/3', 'r+b');
        if ($chan === false) {
            self::protocolFail('fd 3 (the call channel) is not open');
        }
        if ($ffi) {
            $new = array_values(array_diff(self::openFds($ffi), $before));
            if (count($new) === 1) {
                $ffi->fcntl($new[0], 2 /* F_SETFD */, 1 /* FD_CLOEXEC */);
                $ffi->close(3);
            }
        }
        stream_set_blocking($chan, true);
        stream_set_read_buffer($chan, 0);
        stream_set_write_buffer($chan, 0);
        self::$chan = $chan;
    }

    private static function libc(): ?\FFI
    {
        if (!class_exists('\FFI')) {
            return null;
        }
        try {
            return \FFI::cdef('int fcntl(int fd, int cmd, ...); int close(int fd);');
        } catch (\Throwable $e) {
            return null;
        }
    }

    private static function openFds(\FFI $ffi): array
    {
        $open = [];
        for ($fd = 0; $fd < 1024; $fd++) {
            if ($ffi->fcntl($fd, 1 /* F_GETFD */) !== -1) {
                $open[] = $fd;
            }
        }
        return $open;
    }

    private static function protocolFail(string $why): void
    {
        try {
            if (is_resource(\STDERR)) {
                @fwrite(\STDERR, "kiln harness: $why\n");
            }
        } catch (\Throwable $e) {
        }
        self::$frame = null;
        exit(2);
    }

    private static function readExact(int $n): ?string
    {
        $buf = '';
        while (strlen($buf) < $n) {
            $chunk = fread(self::$chan, min($n - strlen($buf), 1 << 20));
            if ($chunk === false || $chunk === '') {
                return $buf === '' ? '' : null;
            }
            $buf .= $chunk;
        }
        return $buf;
    }

    private static function readFrame(): ?array
    {
        $head = self::readExact(4);
        if ($head === '') {
            return null;
        }
        if ($head === null) {
            self::protocolFail("the channel ended inside a frame's length");
        }
        $n = unpack('N', $head)[1];
        $body = $n === 0 ? '' : self::readExact($n);
        if ($body === null || strlen($body) < $n) {
            self::protocolFail("the channel ended inside a frame of $n bytes");
        }
        try {
            $frame = json_decode($body, true, 100000, JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            self::protocolFail('a frame is not UTF-8 JSON: ' . $e->getMessage());
        }
        if (!is_array($frame) || array_is_list($frame) && $frame !== []) {
            self::protocolFail('a frame is not a JSON object');
        }
        return $frame;
    }

    /** The result frame, built only of what the harness holds. */
    private static function resultFrame($id, bool $success, $payload, string $source): array
    {
        $frame = ['v' => 1, 'id' => $id, 'type' => 'result', 'success' => $success];
        if ($success) {
            $frame['result'] = $payload;
        } else {
            $frame['error'] = [
                'message' => self::truncate((string) ($payload['message'] ?? '')),
                'type' => (string) ($payload['type'] ?? 'InternalError'),
                'stack' => self::truncate((string) ($payload['stack'] ?? '')),
            ];
        }
        $frame['signatureSource'] = $source;
        return $frame;
    }

    /** $text cut to $max bytes (at a UTF-8 character), marked when it was cut. */
    private static function truncate(string $text, int $max = self::MAX_TEXT): string
    {
        if (strlen($text) <= $max) {
            return $text;
        }
        $cut = substr($text, 0, max(0, $max - strlen(self::TRUNCATED)));
        for ($i = 0; $i < 4 && $cut !== '' && !preg_match('//u', $cut); $i++) {
            $cut = substr($cut, 0, -1);
        }
        return self::utf8($cut) . self::TRUNCATED;
    }

    /** The frame's body; a result over the call's maxResultBytes, or without JSON, is a SerializationError. */
    private static function encodeFrame($id, bool $success, $payload, string $source, ?int $limit): string
    {
        $flags = JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION;
        if ($success) {
            $body = json_encode(self::resultFrame($id, true, $payload, $source), $flags, 100000);
            if ($body === false) {
                $failure = 'the result frame could not be written: ' . json_last_error_msg();
            } elseif ($limit !== null && strlen($body) > $limit) {
                $failure = 'the result is ' . strlen($body) . " bytes of JSON, over the limit of $limit";
            } else {
                return $body;
            }
            $payload = ['message' => $failure, 'type' => 'SerializationError', 'stack' => ''];
        }
        $body = json_encode(self::resultFrame($id, false, $payload, $source), $flags | JSON_INVALID_UTF8_SUBSTITUTE, 100000);
        if ($body === false || ($limit !== null && strlen($body) > $limit)) {
            // Even the error does not fit: its message alone, cut to what does.
            $message = self::truncate((string) ($payload['message'] ?? ''), max(0, intdiv($limit ?? self::MAX_TEXT, 8) - 64));
            $payload = ['message' => $message, 'type' => (string) ($payload['type'] ?? 'InternalError'), 'stack' => ''];
            $body = json_encode(self::resultFrame($id, false, $payload, $source), $flags | JSON_INVALID_UTF8_SUBSTITUTE);
        }
        return $body;
    }

    private static function limit(?array $frame): ?int
    {
        $limit = $frame['maxResultBytes'] ?? null;
        return is_int($limit) && $limit > 0 ? $limit : null;
    }

    /**
     * Answers the call being answered (self::$frame) with one frame. The call stays open (the
     * shutdown function answers it) until the frame is written; the harness's own error handler
     * is in force while it writes, whatever handler the code installed.
     */
    private static function writeFrame(bool $success, $payload, string $source): void
    {
        $frame = self::$frame;
        set_error_handler([self::class, 'onError']);
        try {
            try {
                $body = self::encodeFrame($frame['id'] ?? null, $success, $payload, $source, self::limit($frame));
            } catch (\Throwable $e) {
                $body = self::encodeFrame($frame['id'] ?? null, false, ['message' => 'the harness failed: ' . get_class($e) . ': ' . self::utf8($e->getMessage()), 'type' => 'InternalError', 'stack' => ''], $source, self::limit($frame));
            }
            self::flushOutput();
            $data = pack('N', strlen($body)) . $body;
            $off = 0;
            $len = strlen($data);
            while ($off < $len) {
                $w = @fwrite(self::$chan, $off === 0 ? $data : substr($data, $off));
                if ($w === false || $w === 0) {
                    self::$frame = null;
                    self::protocolFail('the call channel failed while writing');
                }
                $off += $w;
            }
            @fflush(self::$chan);
            self::$frame = null;
        } finally {
            restore_error_handler();
        }
    }

    /** Flushes the code's output; whatever the code did to it (closed STDOUT, output handlers that throw), nothing escapes. */
    private static function flushOutput(): void
    {
        for ($level = ob_get_level(); $level > 0; $level = ob_get_level()) {
            try {
                $ended = @ob_end_flush();
            } catch (\Throwable $e) {
                $ended = false;
            }
            if (!$ended || ob_get_level() >= $level) {
                break; // a buffer that cannot be removed (or whose handler throws) is left to PHP
            }
        }
        try {
            @flush();
        } catch (\Throwable $e) {
        }
        foreach (['STDOUT', 'STDERR'] as $name) {
            try {
                $stream = constant($name);
                if (is_resource($stream)) {
                    @fflush($stream);
                }
            } catch (\Throwable $e) {
            }
        }
    }

    // --------------------------------------------------------------------------------------------
    // The loop (the global-scope part is at the end of this file)

    /** The next call frame; false at end-of-file. Sets $load when the code must be loaded. */
    public static function next(): bool
    {
        for (;;) {
            $frame = self::readFrame();
            if ($frame === null) {
                return false;
            }
            if (($frame['type'] ?? null) === 'call') {
                break;
            }
        }
        self::$frame = $frame;
        self::$source = null;
        self::$load = null;
        self::$loadError = null;
        try {
            self::prepareLoad(is_string($frame['file'] ?? null) ? $frame['file'] : '/tmp/.kiln/user_code.php');
        } catch (CallError $e) {
            self::$loadError = ['message' => $e->getMessage(), 'type' => $e->type, 'stack' => $e->stackText];
        }
        return true;
    }

    private static function prepareLoad(string $file): void
    {
        $content = @file_get_contents($file);
        if ($content === false) {
            throw new CallError('FileNotFoundError', "cannot read the code at $file");
        }
        $key = [$file, $content];
        if (self::$loaded === $key) {
            return;
        }
        $target = $file;
        $derived = '';
        if (!self::hasOpeningTag($content)) {
            $derived = preg_replace('/(\.php)?$/', '', $file, 1) . '.tagged.php';
            if (@file_put_contents($derived, '<?php ' . $content) === false) {
                $derived = rtrim(sys_get_temp_dir(), '/') . '/kiln-' . md5($file) . '.tagged.php';
                if (@file_put_contents($derived, '<?php ' . $content) === false) {
                    throw new CallError('FileNotFoundError', "cannot write the tagged copy of $file");
                }
            }
            $target = $derived;
        }
        self::$loadedFile = $file;
        self::$derivedFile = $derived;
        self::$loadKey = $key;
        self::$load = $target;
    }

    /** Whether the code starts in PHP mode already: it opens with a tag, or is markup with tags. */
    private static function hasOpeningTag(string $code): bool
    {
        $code = preg_replace('/\A(?:\xEF\xBB\xBF)?(?:#![^\n]*\n)?/', '', $code);
        $start = ltrim($code);
        if ($start !== '' && $start[0] === '<') {
            return true;
        }
        return (bool) preg_match('/^<\?(?:php\b|=)/mi', $code);
    }

    public static function loaded(?\Throwable $e): void
    {
        self::$load = null;
        if ($e === null) {
            self::$loaded = self::$loadKey;
            return;
        }
        self::$loadError = self::throwableError($e, true);
    }

    public static function answer(): void
    {
        $frame = self::$frame;
        $schema = $frame['schema'] ?? null;
        $source = $schema === null ? 'convention' : 'schema';
        try {
            if (($frame['v'] ?? 1) !== 1) {
                throw new CallError('ProtocolError', 'unsupported protocol version ' . json_encode($frame['v']));
            }
            if (self::$loadError !== null) {
                $e = self::$loadError;
                throw new CallError($e['type'], $e['message'], $e['stack']);
            }
            $args = $frame['args'] ?? [];
            $kwargs = $frame['kwargs'] ?? [];
            if (!is_array($args) || !array_is_list($args)) {
                throw self::argumentError('args is not a list');
            }
            if (!is_array($kwargs) || (array_is_list($kwargs) && $kwargs !== [])) {
                throw self::argumentError('kwargs is not an object');
            }
            $name = $frame['function'] ?? null;
            [$callable, $reflection] = self::find($name);
            [$positional, $named, $source] = self::bind($reflection, (string) $name, $args, $kwargs, $schema);
            self::$source = $source;
            try {
                self::$callLine = __LINE__; $value = $callable(...$positional, ...$named); // one line: see boundaryTypeError()
            } catch (\Throwable $e) {
                $argError = self::boundaryTypeError($e, $reflection);
                if ($argError !== null) {
                    throw new CallError('ArgumentError', $argError);
                }
                $err = self::throwableError($e, false);
                throw new CallError($err['type'], $err['message'], $err['stack']);
            }
            $success = true;
            $payload = self::serialize($value);
        } catch (CallError $e) {
            if ($e->source !== null) {
                $source = $e->source;
            }
            $success = false;
            $payload = ['message' => self::mapPaths($e->getMessage()), 'type' => $e->type, 'stack' => self::mapPaths($e->stackText)];
        } catch (\Throwable $e) { // a fault of the harness itself: still one answer
            $success = false;
            $payload = ['message' => self::mapPaths('the harness failed: ' . get_class($e) . ': ' . $e->getMessage()), 'type' => 'InternalError', 'stack' => ''];
        }
        self::writeFrame($success, $payload, $source);
    }

    public static function finish(): void
    {
        self::flushOutput();
        exit(0);
    }

    /** A fatal error or exit() during a call still answers it. */
    public static function onShutdown(): void
    {
        $frame = self::$frame;
        if ($frame === null || self::$chan === null) {
            return;
        }
        $last = error_get_last();
        if ($last !== null && ($last['type'] & self::FATAL)) {
            $type = $last['type'] === E_PARSE ? 'ParseError' : 'FatalError';
            $error = ['message' => self::mapPaths($last['message']) . ' (line ' . $last['line'] . ')', 'type' => $type, 'stack' => self::mapPaths($last['file']) . ':' . $last['line']];
        } else {
            $error = ['message' => 'the code called exit()', 'type' => 'Exit', 'stack' => ''];
        }
        $source = self::$source ?? (($frame['schema'] ?? null) === null ? 'convention' : 'schema');
        self::writeFrame(false, $error, $source);
    }

    // --------------------------------------------------------------------------------------------
    // Errors

    private static function mapPaths(string $text): string
    {
        if (self::$derivedFile !== '') {
            $text = str_replace(self::$derivedFile, self::$loadedFile, $text);
        }
        return self::utf8($text);
    }

    private static function utf8(string $s): string
    {
        if (preg_match('//u', $s)) {
            return $s;
        }
        if (function_exists('mb_scrub')) {
            return mb_scrub($s, 'UTF-8');
        }
        $clean = function_exists('iconv') ? @iconv('UTF-8', 'UTF-8//IGNORE', $s) : false;
        return $clean !== false ? $clean : preg_replace('/[\x80-\xFF]/', '?', $s);
    }

    private static function throwableError(\Throwable $e, bool $loading): array
    {
        $type = get_class($e);
        $message = $e->getMessage();
        if ($e instanceof \ParseError || ($loading && $e instanceof \CompileError)) {
            $message .= ' (line ' . $e->getLine() . ')';
        }
        $lines = [$type . ': ' . $e->getMessage() . ' in ' . $e->getFile() . ':' . $e->getLine()];
        foreach (explode("\n", $e->getTraceAsString()) as $line) {
            if (!str_contains($line, __FILE__) && !str_ends_with($line, '{main}')) {
                $lines[] = $line;
            }
        }
        return ['message' => self::mapPaths($message), 'type' => $type, 'stack' => self::mapPaths(implode("\n", $lines))];
    }

    /**
     * A TypeError PHP raised for an argument the harness passed (a declared parameter type): the
     * caller's mistake. Only PHP's own check of this call says "<function>(): Argument #…, called
     * in <this file> on line <the call's line>" from a frame this file's call line opened; a
     * TypeError of a built-in inside the function (count(), strlen()) or one the code throws is
     * the code's own error.
     */
    private static function boundaryTypeError(\Throwable $e, ?\ReflectionFunctionAbstract $r): ?string
    {
        if (!($e instanceof \TypeError) || $e instanceof \ArgumentCountError || $r === null || self::$callLine === 0) {
            return null;
        }
        $top = $e->getTrace()[0] ?? null;
        if ($top === null || ($top['file'] ?? '') !== __FILE__ || ($top['line'] ?? 0) !== self::$callLine) {
            return null;
        }
        $name = $r instanceof \ReflectionMethod ? $r->class . '::' . $r->getName() : $r->getName();
        $message = $e->getMessage();
        $prefix = $name . '(): Argument #';
        $suffix = ', called in ' . __FILE__ . ' on line ' . self::$callLine;
        if (strncasecmp($message, $prefix, strlen($prefix)) !== 0 || !str_ends_with($message, $suffix)) {
            return null;
        }
        return substr($message, 0, -strlen($suffix));
    }

    private static function argumentError(string $message): CallError
    {
        return new CallError('ArgumentError', $message);
    }

    // --------------------------------------------------------------------------------------------
    // Finding the function

    /** Whether $path (a getFileName()) is the user's file (or its tagged copy), never this one. */
    private static function inUserFile($path): bool
    {
        if (!is_string($path) || $path === '' || $path === __FILE__) {
            return false;
        }
        $real = realpath($path);
        foreach ([self::$loadedFile, self::$derivedFile] as $file) {
            if ($file !== '' && ($path === $file || ($real !== false && $real === realpath($file)))) {
                return true;
            }
        }
        return false;
    }

    /** Whether $name is in the harness's own namespace. */
    private static function harnessName(string $name): bool
    {
        return stripos(ltrim($name, '\\'), __NAMESPACE__ . '\\') === 0;
    }

    /**
     * [callable, ReflectionFunctionAbstract|null]. Only what the user's file defines is found: a
     * function or public static method whose getFileName() is that file, a global closure made
     * there; never a built-in, a library's, or the harness's own.
     */
    private static function find($name): array
    {
        if (!is_string($name) || $name === '') {
            throw new CallError('FunctionNotFound', 'no function name was given');
        }
        $missing = new CallError('FunctionNotFound', "function '$name' is not defined in the code");
        if (self::harnessName($name)) {
            throw $missing;
        }
        if (str_contains($name, '::')) {
            [$class, $method] = explode('::', ltrim($name, '\\'), 2);
            if (class_exists($class) && method_exists($class, $method)) {
                $rm = new \ReflectionMethod($class, $method);
                if ($rm->isStatic() && $rm->isPublic() && !self::harnessName($rm->class) && self::inUserFile($rm->getFileName())) {
                    return [[$class, $method], $rm];
                }
            }
            throw new CallError('FunctionNotFound', "function '$name' is not defined in the code (a public static method)");
        }
        $fn = ltrim($name, '\\');
        if (function_exists($fn)) {
            $rf = new \ReflectionFunction($fn);
            if ($rf->isUserDefined() && self::inUserFile($rf->getFileName())) {
                return [$fn, $rf];
            }
        }
        $found = [];
        foreach (get_defined_functions()['user'] as $candidate) {
            $short = ($at = strrpos($candidate, '\\')) === false ? $candidate : substr($candidate, $at + 1);
            if (strcasecmp($short, $fn) === 0 && !self::harnessName($candidate) && self::inUserFile((new \ReflectionFunction($candidate))->getFileName())) {
                $found[] = $candidate;
            }
        }
        if (count($found) === 1) {
            return [$found[0], new \ReflectionFunction($found[0])];
        }
        if (array_key_exists($fn, $GLOBALS) && is_object($GLOBALS[$fn]) && is_callable($GLOBALS[$fn])) {
            $value = $GLOBALS[$fn];
            if ($value instanceof \Closure) {
                $rf = new \ReflectionFunction($value);
                if (self::inUserFile($rf->getFileName())) {
                    return [$value, $rf];
                }
            } elseif (method_exists($value, '__invoke') && self::inUserFile((new \ReflectionMethod($value, '__invoke'))->getFileName())) {
                return [$value, null];
            }
        }
        throw $missing;
    }

    // --------------------------------------------------------------------------------------------
    // Binding

    private static function jsonType($v): string
    {
        if ($v === null) {
            return 'null';
        }
        if (is_bool($v)) {
            return 'boolean';
        }
        if (is_int($v) || is_float($v)) {
            return 'number';
        }
        if (is_string($v)) {
            return 'string';
        }
        if (is_array($v)) {
            return array_is_list($v) ? 'array' : 'object';
        }
        return get_debug_type($v);
    }

    private static function typeMatches($kind, $v): bool
    {
        switch ($kind) {
            case 'number':
                return is_int($v) || is_float($v);
            case 'integer':
                return is_int($v) || (is_float($v) && is_finite($v) && floor($v) == $v);
            case 'string':
                return is_string($v);
            case 'boolean':
                return is_bool($v);
            case 'array':
                return is_array($v) && array_is_list($v);
            case 'object':
                return is_array($v) && (!array_is_list($v) || $v === []);
            case 'null':
                return $v === null;
            default:
                return true;
        }
    }

    /** [args, kwargs] from the schema. */
    private static function bindSchema($schema, string $fname, array $args, array $kwargs): array
    {
        if (!is_array($schema) || (array_is_list($schema) && $schema !== [])) {
            throw self::argumentError('the schema is not an object');
        }
        $params = $schema['params'] ?? [];
        if (!is_array($params) || !array_is_list($params)) {
            throw self::argumentError("the schema's params is not a list");
        }
        $values = [];
        foreach ($params as $i => $p) {
            if (!is_array($p) || !is_string($p['name'] ?? null)) {
                throw self::argumentError('schema parameter ' . ($i + 1) . ' has no name');
            }
            $pname = $p['name'];
            $hasDefault = array_key_exists('default', $p);
            $required = array_key_exists('required', $p) ? (bool) $p['required'] : !$hasDefault;
            $present = true;
            $supplied = true;
            $value = null;
            if ($i < count($args)) {
                if (array_key_exists($pname, $kwargs)) {
                    throw self::argumentError("got multiple values for argument '$pname' of $fname()");
                }
                $value = $args[$i];
            } elseif (array_key_exists($pname, $kwargs)) {
                $value = $kwargs[$pname];
                unset($kwargs[$pname]);
            } elseif ($hasDefault) {
                $value = $p['default'];
                $supplied = false;
            } elseif ($required) {
                throw self::argumentError("missing required argument '$pname' of $fname()");
            } else {
                $present = false;
                $supplied = false;
            }
            $kind = $p['type'] ?? null;
            if ($supplied && !self::typeMatches($kind, $value)) {
                $article = preg_match('/^[aeiou]/', (string) $kind) ? 'an' : 'a';
                throw self::argumentError("argument '$pname' of $fname() must be $article $kind, got " . self::jsonType($value));
            }
            $values[] = [$pname, $present, $value];
        }
        $extra = array_slice($args, count($params));
        if ($extra && empty($schema['variadic'])) {
            $n = count($params);
            throw self::argumentError("$fname() takes $n argument" . ($n === 1 ? '' : 's') . ' but ' . count($args) . ' were given (argument ' . ($n + 1) . ' has no parameter)');
        }
        if ($kwargs && empty($schema['acceptsKwargs'])) {
            throw self::argumentError("$fname() got an unexpected keyword argument '" . array_key_first($kwargs) . "'");
        }
        $positional = [];
        $named = [];
        $gap = false;
        foreach ($values as [$pname, $present, $value]) {
            if (!$present) {
                $gap = true;
            } elseif ($gap) {
                $named[$pname] = $value;
            } else {
                $positional[] = $value;
            }
        }
        return [array_merge($positional, $extra), $named + $kwargs];
    }

    /** [positional, named, signatureSource] */
    private static function bind(?\ReflectionFunctionAbstract $r, string $fname, array $args, array $kwargs, $schema): array
    {
        $source = null;
        if ($schema !== null) {
            [$args, $kwargs] = self::bindSchema($schema, $fname, $args, $kwargs);
            $source = 'schema';
        }
        if ($r === null) {
            // The seed's convention: the kwargs, if any, as one trailing associative array.
            return [$kwargs ? array_merge($args, [$kwargs]) : $args, [], $source ?? 'convention'];
        }
        $source = $source ?? 'inferred';
        try {
            [$positional, $named] = self::bindReflected($r, $fname, $args, $kwargs);
        } catch (CallError $e) {
            $e->source = $source;
            throw $e;
        }
        return [$positional, $named, $source];
    }

    private static function bindReflected(\ReflectionFunctionAbstract $r, string $fname, array $args, array $kwargs): array
    {
        $fixed = [];
        $variadic = null;
        foreach ($r->getParameters() as $p) {
            if ($p->isVariadic()) {
                $variadic = $p;
            } else {
                $fixed[] = $p;
            }
        }
        $nf = count($fixed);
        $na = count($args);
        if ($na > $nf && $variadic === null) {
            throw self::argumentError("$fname() takes $nf argument" . ($nf === 1 ? '' : 's') . " but $na were given (argument " . ($nf + 1) . ' has no parameter)');
        }
        $byIndex = [];
        $leftover = [];
        foreach ($kwargs as $key => $value) {
            $key = (string) $key;
            $at = null;
            foreach ($fixed as $i => $p) {
                if ($p->getName() === $key) {
                    $at = $i;
                    break;
                }
            }
            if ($at === null) {
                $leftover[$key] = $value;
                continue;
            }
            if ($at < $na) {
                throw self::argumentError("got multiple values for argument '$key' of $fname()");
            }
            $byIndex[$at] = $value;
        }
        $trailing = null;
        if ($leftover) {
            $target = null;
            for ($i = $na; $i < $nf; $i++) {
                if (!array_key_exists($i, $byIndex)) {
                    $target = $i;
                    break;
                }
            }
            if ($target !== null) {
                $byIndex[$target] = $leftover;
            } elseif ($variadic !== null) {
                $trailing = $leftover;
            } else {
                throw self::argumentError("$fname() got an unexpected keyword argument '" . array_key_first($leftover) . "'");
            }
        }
        for ($i = $na; $i < $nf; $i++) {
            $p = $fixed[$i];
            if (!array_key_exists($i, $byIndex) && !$p->isOptional() && !$p->isDefaultValueAvailable()) {
                throw self::argumentError("missing required argument '" . $p->getName() . "' of $fname()");
            }
        }
        $positional = $args;
        $named = [];
        $gap = false;
        for ($i = $na; $i < $nf; $i++) {
            if (!array_key_exists($i, $byIndex)) {
                $gap = true;
            } elseif ($gap) {
                $named[$fixed[$i]->getName()] = $byIndex[$i];
            } else {
                $positional[] = $byIndex[$i];
            }
        }
        if ($trailing !== null) {
            if ($gap) {
                throw self::argumentError("$fname() got an unexpected keyword argument '" . array_key_first($trailing) . "'");
            }
            $positional[] = $trailing;
        }
        return [$positional, $named];
    }

    // --------------------------------------------------------------------------------------------
    // Results

    private static function describe($v): string
    {
        if ($v instanceof \Closure) {
            return 'a Closure';
        }
        if (is_object($v)) {
            return 'an object of class ' . get_class($v);
        }
        if (is_resource($v) || str_starts_with(gettype($v), 'resource')) {
            return 'a resource (' . (is_resource($v) ? get_resource_type($v) : 'closed') . ')';
        }
        if (is_float($v)) {
            return is_nan($v) ? 'NAN' : ($v > 0 ? 'INF' : '-INF');
        }
        return 'a ' . get_debug_type($v);
    }

    private static function fail($v, string $at, string $why = 'which has no JSON form'): void
    {
        throw new Unserializable('the result contains ' . self::describe($v) . " at $at, $why");
    }

    private static function str(string $s)
    {
        if (preg_match('//u', $s)) {
            return $s;
        }
        return (object) ['$base64' => base64_encode($s)];
    }

    private static function serialize($value)
    {
        $active = [];
        try {
            return self::plain($value, 'result', 0, $active);
        } catch (Unserializable $e) {
            throw new CallError('SerializationError', $e->getMessage());
        } catch (\Throwable $e) {
            throw new CallError('SerializationError', 'turning the result (' . get_debug_type($value) . ') into JSON failed: ' . get_class($e) . ': ' . $e->getMessage());
        }
    }

    private static function plain($v, string $at, int $depth, array &$active)
    {
        if ($v === null || is_bool($v) || is_int($v)) {
            return $v;
        }
        if (is_float($v)) {
            if (!is_finite($v)) {
                self::fail($v, $at);
            }
            return $v;
        }
        if (is_string($v)) {
            return self::str($v);
        }
        if ($depth >= self::MAX_DEPTH) {
            throw new Unserializable('the result is nested deeper than ' . self::MAX_DEPTH . " levels at $at");
        }
        if (is_array($v)) {
            $out = [];
            if (array_is_list($v)) {
                foreach ($v as $i => $x) {
                    $out[] = self::plain($x, "{$at}[$i]", $depth + 1, $active);
                }
                return $out;
            }
            foreach ($v as $k => $x) {
                $out[(string) $k] = self::plain($x, "{$at}[" . var_export($k, true) . ']', $depth + 1, $active);
            }
            return (object) $out;
        }
        if (!is_object($v)) {
            self::fail($v, $at);
        }
        $id = spl_object_id($v);
        if (isset($active[$id])) {
            throw new Unserializable("the result contains a cycle: $at (" . self::describe($v) . ') contains itself');
        }
        $active[$id] = true;
        try {
            return self::plainObject($v, $at, $depth, $active);
        } finally {
            unset($active[$id]);
        }
    }

    private static function plainObject(object $v, string $at, int $depth, array &$active)
    {
        $next = function ($x, string $where) use ($depth, &$active) {
            return self::plain($x, $where, $depth + 1, $active);
        };
        if ($v instanceof \Closure) {
            self::fail($v, $at);
        }
        if ($v instanceof \JsonSerializable) {
            return $next($v->jsonSerialize(), $at . '->jsonSerialize()');
        }
        if ($v instanceof \DateTimeInterface) {
            return $v->format((int) $v->format('u') === 0 ? 'Y-m-d\TH:i:sP' : 'Y-m-d\TH:i:s.uP');
        }
        if ($v instanceof \BackedEnum) {
            return $next($v->value, $at . '->value');
        }
        if ($v instanceof \UnitEnum) {
            return $v->name;
        }
        if ($v instanceof \Throwable) {
            return (object) ['type' => get_class($v), 'message' => self::utf8($v->getMessage())];
        }
        if ($v instanceof \Traversable) {
            $items = [];
            try {
                foreach ($v as $k => $x) {
                    $items[] = [$k, $x];
                }
            } catch (\Throwable $e) {
                throw new Unserializable('the result is ' . self::describe($v) . ' that threw ' . get_class($e) . ' while it was turned into JSON: ' . $e->getMessage());
            }
            $list = true;
            foreach ($items as $i => [$k]) {
                if ($k !== $i) {
                    $list = false;
                    break;
                }
            }
            if ($list || $v instanceof \Generator) {
                $out = [];
                foreach ($items as $i => [, $x]) {
                    $out[] = $next($x, "{$at}[$i]");
                }
                return $out;
            }
            $out = [];
            foreach ($items as [$k, $x]) {
                $out[is_scalar($k) || $k === null ? (string) $k : get_debug_type($k)] = $next($x, "{$at}[" . (is_scalar($k) ? var_export($k, true) : '?') . ']');
            }
            return (object) $out;
        }
        $out = [];
        foreach (get_object_vars($v) as $k => $x) {
            $out[(string) $k] = $next($x, $at . '->' . $k);
        }
        return (object) $out;
    }
}

// ------------------------------------------------------------------------------------------------
// The loop. The user's code is required here, in the global scope.

H::start();
while (H::next()) {
    if (H::$load !== null) {
        try {
            require H::$load;
            H::loaded(null);
        } catch (\Throwable $kilnLoadError) {
            H::loaded($kilnLoadError);
        }
        unset($kilnLoadError);
    }
    H::answer();
}
H::finish();
