# Kiln function harness for Ruby (protocol kiln-call/1, see docs/functions.md).
#
# Run as `ruby /tmp/.kiln/harness.rb` with a connected unix socket as fd 3. It reads call frames
# (4-byte big-endian length + UTF-8 JSON) from fd 3 until end-of-file and answers each with exactly
# one result frame carrying the call's id. Before any user code is loaded, fd 3 is moved to a
# close-on-exec duplicate (Ruby's IO#dup) and fd 3 itself is closed, so programs the user's code
# starts do not inherit the channel. Everything the user's code prints goes to its own stdout and
# stderr.
#
# The user's code (the call frame's `file`, /tmp/.kiln/user_code.rb) is loaded with Kernel.load at
# the top level: its `def`s become private methods of Object, which is where functions are found.
# The harness defines no top-level methods of its own: everything lives in KilnHarness.

require 'json'

module KilnHarness
  HARNESS_FILE = File.expand_path(__FILE__)
  MAX_DEPTH = 512
  # Integers from here on round to an infinite double: no JSON reader of Kiln's takes them.
  INT_LIMIT = 2**1024 - 2**970
  MAX_TEXT = 64 * 1024 # bytes of an error's message, and of its stack
  TRUNCATED = " \u2026 [truncated]"
  MAIN = TOPLEVEL_BINDING.receiver

  # What finds, builds and writes frames is captured here, before any user code runs: code that
  # redefines `method`, `class`, `to_json`, `Float#to_s`, `JSON.generate`, ... changes what it
  # computes itself, never a frame.
  METHOD_OF = Kernel.instance_method(:method)
  RESPOND_TO = Kernel.instance_method(:respond_to?)
  CLASS_OF = Kernel.instance_method(:class)
  IS_A = Kernel.instance_method(:is_a?)
  FREEZE = Kernel.instance_method(:freeze)
  INSTANCE_VARIABLES = Kernel.instance_method(:instance_variables)
  INSTANCE_VARIABLE_GET = Kernel.instance_method(:instance_variable_get)
  EQUAL = BasicObject.instance_method(:equal?)
  MODULE_NAME = Module.instance_method(:name)
  MODULE_TO_S = Module.instance_method(:to_s)
  INSTANCE_METHOD = Module.instance_method(:instance_method)
  CONST_SOURCE_LOCATION = Module.instance_method(:const_source_location)
  UNBOUND_EQ = UnboundMethod.instance_method(:==)
  METHOD_OWNER = Method.instance_method(:owner)
  METHOD_SOURCE = Method.instance_method(:source_location)
  STRING_NEW = String.method(:new)
  FLOAT_TO_S = Float.instance_method(:to_s)
  INTEGER_TO_S = Integer.instance_method(:to_s)
  JSON_STATE_NEW = JSON::State.method(:new)
  JSON_GENERATE = JSON::State.instance_method(:generate)
  JSON_PARSE = JSON.method(:parse)
  GENERATE_OPTIONS = { allow_nan: false, max_nesting: 0 }.freeze
  ENUMERABLE = Enumerable
  IO_READ = IO.instance_method(:read)
  IO_WRITE = IO.instance_method(:write)

  # An error the harness reports itself.
  class CallError < StandardError
    attr_reader :type, :stack
    attr_accessor :source

    def initialize(type, message, stack = '')
      super(message)
      @type = type
      @stack = stack
    end
  end

  class Unserializable < StandardError; end

  class << self
    # ------------------------------------------------------------------------------------------
    # The channel

    def take_channel
      raw = IO.for_fd(3, 'r+b')
      chan = raw.dup # close-on-exec, as every descriptor Ruby makes
      raw.close # closes fd 3 itself (an IO that does not autoclose would leave it open)
      chan.binmode
      chan.sync = true
      chan
    rescue SystemCallError, ArgumentError, IOError => e
      protocol_fail("fd 3 (the call channel) is not open: #{e.message}")
    end

    def protocol_fail(why)
      STDERR.write("kiln harness: #{why}\n")
      STDERR.flush
      Kernel.exit!(2)
    end

    def read_frame(chan)
      head = IO_READ.bind_call(chan, 4)
      return nil if head.nil? || head.empty?
      protocol_fail('the channel ended inside a frame\'s length') if head.bytesize < 4
      n = head.unpack1('N')
      body = n.zero? ? ''.b : IO_READ.bind_call(chan, n)
      protocol_fail("the channel ended inside a frame of #{n} bytes") if body.nil? || body.bytesize < n
      body.force_encoding(Encoding::UTF_8)
      protocol_fail('a frame is not UTF-8') unless body.valid_encoding?
      frame = begin
        JSON_PARSE.call(body)
      rescue JSON::ParserError => e
        protocol_fail("a frame is not JSON: #{e.message}")
      end
      protocol_fail('a frame is not a JSON object') unless frame.is_a?(Hash)
      frame
    end

    # A plain String (class String, no singleton methods, frozen) holding s's text.
    def plain_string(s)
      FREEZE.bind_call(STRING_NEW.call(s))
    end

    def string?(v)
      IS_A.bind_call(v, String)
    end

    def same?(a, b)
      EQUAL.bind_call(a, b)
    end

    # Whether the methods the C generator calls on numbers are still Ruby's own.
    def numbers_intact?
      UNBOUND_EQ.bind_call(INSTANCE_METHOD.bind_call(Float, :to_s), FLOAT_TO_S) &&
        UNBOUND_EQ.bind_call(INSTANCE_METHOD.bind_call(Integer, :to_s), INTEGER_TO_S)
    end

    # JSON text of plain data (what `plain` and the harness build): JSON's C generator, which
    # calls no method of the data's but Float#to_s and Integer#to_s, or, when the code redefined
    # those, a walk that formats numbers with Ruby's own.
    def generate(data)
      state = JSON_STATE_NEW.call(GENERATE_OPTIONS)
      return JSON_GENERATE.bind_call(state, data) if numbers_intact?

      out = String.new(encoding: Encoding::UTF_8)
      emit(data, out, state)
      out
    end

    def emit(v, out, state)
      klass = CLASS_OF.bind_call(v)
      if v.nil? then out << 'null'
      elsif same?(v, true) then out << 'true'
      elsif same?(v, false) then out << 'false'
      elsif same?(klass, String) then out << JSON_GENERATE.bind_call(state, plain_string(v))
      elsif same?(klass, Integer) then out << INTEGER_TO_S.bind_call(v)
      elsif same?(klass, Float)
        raise JSON::GeneratorError, "#{FLOAT_TO_S.bind_call(v)} not allowed in JSON" unless v.finite?

        out << FLOAT_TO_S.bind_call(v)
      elsif same?(klass, Array)
        out << '['
        v.each_with_index do |x, i|
          out << ',' unless i.zero?
          emit(x, out, state)
        end
        out << ']'
      elsif same?(klass, Hash)
        out << '{'
        first = true
        v.each do |k, x|
          out << ',' unless first
          first = false
          emit(string?(k) ? k : k.to_s, out, state)
          out << ':'
          emit(x, out, state)
        end
        out << '}'
      else
        raise JSON::GeneratorError, "#{MODULE_TO_S.bind_call(klass)} is not plain JSON data"
      end
    end

    # The whole frame (length and body); a result that cannot be sent is a SerializationError.
    def encode_frame(call_id, success, payload, source, limit = nil)
      if success
        failure = nil
        body = begin
          generate(result_frame(call_id, true, payload, source)).b
        rescue Exception => e # rubocop:disable Lint/RescueException
          failure = "the result cannot be turned into JSON: #{exception_text(e)}"
          nil
        end
        if body && limit && body.bytesize > limit
          failure = "the result is #{body.bytesize} bytes of JSON, over the limit of #{limit}"
          body = nil
        end
        return [body.bytesize].pack('N') + body if body

        payload = error_hash('SerializationError', failure)
      end
      body = generate(result_frame(call_id, false, payload, source)).b
      if limit && body.bytesize > limit
        # Even the error does not fit: its message alone, cut to what does.
        cut = truncate(payload['message'], [limit / 8 - 64, 0].max)
        body = generate(result_frame(call_id, false, error_hash(payload['type'], cut), source)).b
      end
      [body.bytesize].pack('N') + body
    end

    # The result frame, built only of plain objects the harness holds.
    def result_frame(call_id, success, payload, source)
      frame = { 'v' => 1, 'id' => call_id, 'type' => 'result', 'success' => success ? true : false }
      if success
        frame['result'] = payload
      else
        frame['error'] = { 'message' => truncate(payload['message']),
                           'type' => string?(payload['type']) ? plain_string(payload['type']) : 'InternalError',
                           'stack' => truncate(payload['stack']) }
      end
      frame['signatureSource'] = source
      frame
    end

    def error_hash(type, message, stack = '')
      { 'message' => message, 'type' => type, 'stack' => stack }
    end

    # text cut to `max` bytes of UTF-8 (at a character), marked when it was cut.
    def truncate(text, max = MAX_TEXT)
      text = utf8(text)
      return text if text.bytesize <= max

      budget = [max - TRUNCATED.bytesize, 0].max
      cut = text.byteslice(0, budget).scrub('')
      plain_string(cut + TRUNCATED)
    end

    def flush_output
      [$stdout, $stderr, STDOUT, STDERR].uniq.each do |io|
        io.flush
      rescue Exception # rubocop:disable Lint/RescueException -- the code's own streams
        nil
      end
    rescue Exception # rubocop:disable Lint/RescueException
      nil
    end

    # ------------------------------------------------------------------------------------------
    # Errors

    def user_backtrace(e)
      lines = e.backtrace
      return [] unless IS_A.bind_call(lines, Array)

      lines.select { |line| string?(line) && !line.start_with?(HARNESS_FILE) }
    rescue Exception # rubocop:disable Lint/RescueException -- a backtrace that raises, even exit
      []
    end

    # The name of v's class, without calling any method of the code's.
    def class_name(v)
      klass = CLASS_OF.bind_call(v)
      name = MODULE_NAME.bind_call(klass)
      plain_string(name.nil? ? MODULE_TO_S.bind_call(klass) : name)
    end

    # e.message as text; its class name when that raises (even SystemExit) or is not a String.
    def exception_message(e)
      text = e.message
      string?(text) ? utf8(text) : utf8(text.to_s)
    rescue Exception # rubocop:disable Lint/RescueException
      class_name(e)
    end

    # "Class: message", or "Class" when the message is empty.
    def exception_text(e)
      message = exception_message(e)
      name = class_name(e)
      message.empty? || message == name ? name : "#{name}: #{message}"
    end

    def exception_error(e, file = nil)
      type = class_name(e)
      if IS_A.bind_call(e, SyntaxError)
        text = e.message.to_s
        line = nil
        summary = nil
        text.each_line do |l|
          m = /\A(.*?):(\d+): (.*)\z/.match(l.chomp)
          next unless m && (file.nil? || m[1] == file || File.expand_path(m[1]) == File.expand_path(file))

          line = m[2]
          summary = m[3]
          break
        end
        message = summary ? "#{summary} (line #{line})" : text.lines.first.to_s.chomp
        return { 'message' => message, 'type' => type, 'stack' => text }
      end
      message = if IS_A.bind_call(e, SystemExit)
                  "the function called exit(#{SystemExit.instance_method(:status).bind_call(e)})"
                else
                  exception_message(e)
                end
      { 'message' => utf8(message), 'type' => type, 'stack' => utf8(user_backtrace(e).join("\n")) }
    rescue Exception # rubocop:disable Lint/RescueException -- whatever the exception does
      { 'message' => type || 'Exception', 'type' => type || 'Exception', 'stack' => '' }
    end

    # A plain, frozen, valid UTF-8 String of s (a String; anything else is '').
    def utf8(s)
      return '' unless string?(s)

      s = STRING_NEW.call(s)
      s.force_encoding(Encoding::UTF_8)
      FREEZE.bind_call(s.valid_encoding? ? s : s.scrub('?'))
    end

    def raise_from(e, file = nil)
      err = exception_error(e, file)
      raise CallError.new(err['type'], err['message'], err['stack'])
    end

    # ------------------------------------------------------------------------------------------
    # Loading the user's code

    def load_code(file)
      content = begin
        File.binread(file)
      rescue SystemCallError => e
        raise CallError.new('FileNotFoundError', "cannot read the code at #{file}: #{e.message}")
      end
      @user_file = File.expand_path(file)
      return if @loaded == [file, content]

      dir = File.dirname(File.expand_path(file))
      $LOAD_PATH.unshift(dir) unless $LOAD_PATH.include?(dir)
      begin
        Kernel.load(file)
      rescue Exception => e # the code's own failure, whatever it is
        raise_from(e, file)
      end
      @loaded = [file, content]
    end

    # Whether a source_location names the user's file (C methods and other files' do not).
    def in_user_file?(location)
      IS_A.bind_call(location, Array) && string?(location[0]) && !@user_file.nil? &&
        File.expand_path(location[0]) == @user_file
    end

    def method_in_user_file?(meth)
      in_user_file?(METHOD_SOURCE.bind_call(meth))
    end

    def constant_in_user_file?(path)
      in_user_file?(CONST_SOURCE_LOCATION.bind_call(Object, path))
    rescue NameError, ArgumentError
      false
    end

    # Only what the user's file defines is found: a method whose source is the file (not a C
    # method, nor one of the harness or of a library), a constant the file assigns.
    def find(name)
      raise CallError.new('FunctionNotFound', 'no function name was given') unless string?(name) && !name.empty?

      found = begin
        find_in_code(name)
      rescue CallError
        raise
      rescue Exception => e # rubocop:disable Lint/RescueException -- the code's own failure
        raise_from(e)
      end
      return found if found

      raise CallError.new('FunctionNotFound', "function '#{name}' is not defined in the code")
    end

    def find_in_code(name)
      if (m = /\A(.+)(?:\.|::)([^.:]+)\z/.match(name))
        owner = begin
          Object.const_get(m[1])
        rescue NameError, ArgumentError
          nil
        end
        return nil if owner.nil? || !RESPOND_TO.bind_call(owner, m[2])

        meth = METHOD_OF.bind_call(owner, m[2])
        return meth if method_in_user_file?(meth)
        # `Const.new` of a class the file defines (Class#new, or a Struct's C `new`)
        return meth if m[2] == 'new' && IS_A.bind_call(owner, Class) && constant_in_user_file?(m[1])
      elsif name.match?(/\A[[:alpha:]_][[:alnum:]_]*[?!]?\z/)
        sym = name.to_sym
        if Object.private_method_defined?(sym, false) || Object.method_defined?(sym, false)
          meth = METHOD_OF.bind_call(MAIN, sym)
          return meth if method_in_user_file?(meth)
        end
        if name.match?(/\A[[:upper:]]/) && Object.const_defined?(sym, false) && constant_in_user_file?(name)
          value = Object.const_get(sym)
          return METHOD_OF.bind_call(value, :new) if IS_A.bind_call(value, Class)
          return value if IS_A.bind_call(value, Proc)
          return METHOD_OF.bind_call(value, :call) if RESPOND_TO.bind_call(value, :call)

          raise CallError.new('FunctionNotFound',
                              "'#{name}' is defined in the code but is a #{class_name(value)}, not a function")
        end
      end
      nil
    end

    # ------------------------------------------------------------------------------------------
    # Binding

    def json_type(v)
      case v
      when nil then 'null'
      when true, false then 'boolean'
      when Numeric then 'number'
      when String then 'string'
      when Array then 'array'
      when Hash then 'object'
      else v.class.name
      end
    end

    def type_matches?(kind, v)
      case kind
      when 'number' then v.is_a?(Numeric)
      when 'integer' then v.is_a?(Integer) || (v.is_a?(Float) && v.finite? && v == v.floor)
      when 'string' then v.is_a?(String)
      when 'boolean' then v == true || v == false
      when 'array' then v.is_a?(Array)
      when 'object' then v.is_a?(Hash)
      when 'null' then v.nil?
      else true
      end
    end

    def argument_error(message)
      CallError.new('ArgumentError', message)
    end

    def bind_schema(schema, fname, args, kwargs)
      raise argument_error('the schema is not an object') unless schema.is_a?(Hash)

      params = schema['params'] || []
      raise argument_error("the schema's params is not a list") unless params.is_a?(Array)

      kwargs = kwargs.dup
      values = []
      params.each_with_index do |p, i|
        raise argument_error("schema parameter #{i + 1} has no name") unless p.is_a?(Hash) && p['name'].is_a?(String)

        pname = p['name']
        has_default = p.key?('default')
        required = p.key?('required') ? p['required'] : !has_default
        supplied = true
        present = true
        if i < args.size
          raise argument_error("got multiple values for argument '#{pname}' of #{fname}()") if kwargs.key?(pname)

          value = args[i]
        elsif kwargs.key?(pname)
          value = kwargs.delete(pname)
        elsif has_default
          value = p['default']
          supplied = false
        elsif required
          raise argument_error("missing required argument '#{pname}' of #{fname}()")
        else
          value = nil
          present = false
          supplied = false
        end
        if supplied && !type_matches?(p['type'], value)
          article = p['type'].to_s.match?(/\A[aeiou]/) ? 'an' : 'a'
          raise argument_error("argument '#{pname}' of #{fname}() must be #{article} #{p['type']}, got #{json_type(value)}")
        end
        values << [pname, present, value]
      end
      extra = args[params.size..] || []
      if !extra.empty? && !schema['variadic']
        raise argument_error("#{fname}() takes #{params.size} argument#{params.size == 1 ? '' : 's'} but #{args.size} " \
                             "were given (argument #{params.size + 1} has no parameter)")
      end
      if !kwargs.empty? && !schema['acceptsKwargs']
        raise argument_error("#{fname}() got an unexpected keyword argument '#{kwargs.keys.first}'")
      end

      positional = []
      named = {}
      gap = false
      values.each do |pname, present, value|
        if !present
          gap = true
        elsif gap
          named[pname] = value
        else
          positional << value
        end
      end
      [positional + extra, named.merge(kwargs)]
    end

    # A C method's `(*)` or a Ruby method's `(...)` says nothing about its parameters.
    def convention?(params)
      rest = params.find { |kind, _| kind == :rest }
      return false unless rest && (rest[1].nil? || rest[1] == :*)

      params.all? { |kind, _| %i[rest keyrest block].include?(kind) }
    end

    def bind_inferred(params, fname, args, kwargs)
      lead = []
      opt = []
      post = []
      rest = false
      keyreq = []
      key = []
      keyrest = false
      params.each do |type, pname|
        case type
        when :req then (rest || !opt.empty? ? post : lead) << pname
        when :opt then opt << pname
        when :rest then rest = true
        when :keyreq then keyreq << pname
        when :key then key << pname
        when :keyrest then keyrest = true
        end
      end
      keywords = {}
      by_position = {}
      leftovers = {}
      names = lead + opt + post
      kwargs.each do |k, v|
        sym = k.to_sym
        if keyreq.include?(sym) || key.include?(sym)
          keywords[sym] = v
        elsif (at = names.index(sym))
          by_position[at] = [k, v]
        else
          leftovers[sym] = v
        end
      end
      positional = args.dup
      by_position.keys.sort.each do |at|
        k, v = by_position[at]
        if at < args.size
          raise argument_error("got multiple values for argument '#{k}' of #{fname}()")
        elsif !post.empty? || (rest && args.size > lead.size + opt.size)
          raise argument_error("argument '#{k}' of #{fname}() cannot be given by name here: pass it in args")
        elsif at > positional.size
          skipped = names[positional.size]
          if opt.include?(skipped)
            raise argument_error("argument '#{k}' of #{fname}() cannot be given by name without the optional " \
                                 "argument '#{skipped}' before it (Ruby cannot skip an optional argument)")
          end
          raise argument_error("missing required argument '#{skipped}' of #{fname}()")
        end
        positional << v
      end
      required = lead.size + post.size
      if positional.size < required
        raise argument_error("missing required argument '#{(lead + post)[positional.size]}' of #{fname}()")
      end
      if !rest && positional.size > required + opt.size
        most = required + opt.size
        raise argument_error("#{fname}() takes #{opt.empty? ? '' : 'at most '}#{most} argument#{most == 1 ? '' : 's'} " \
                             "but #{positional.size} were given (argument #{most + 1} has no parameter)")
      end
      missing = keyreq.find { |k| !keywords.key?(k) }
      raise argument_error("missing required keyword argument '#{missing}' of #{fname}()") if missing

      unless leftovers.empty?
        raise argument_error("#{fname}() got an unexpected keyword argument '#{leftovers.keys.first}'") unless keyrest

        keywords.merge!(leftovers)
      end
      [positional, keywords]
    end

    def parameters_of(callable)
      if callable.is_a?(Method) && callable.name == :new && callable.receiver.is_a?(Class)
        return callable.receiver.instance_method(:initialize).parameters
      end

      callable.parameters
    end

    # [call, signatureSource]
    def bind(callable, fname, args, kwargs, schema)
      source = schema.nil? ? nil : 'schema'
      args, kwargs = bind_schema(schema, fname, args, kwargs) unless schema.nil?
      params = parameters_of(callable)
      if convention?(params)
        kw = kwargs.transform_keys(&:to_sym)
        return [-> { callable.call(*args, **kw) }, source || 'convention']
      end
      source ||= 'inferred'
      begin
        positional, keywords = bind_inferred(params, fname, args, kwargs)
      rescue CallError => e
        e.source = source
        raise e
      end
      [-> { callable.call(*positional, **keywords) }, source]
    end

    # ------------------------------------------------------------------------------------------
    # Results

    def describe(v)
      case v
      when Proc then v.lambda? ? 'a lambda (Proc)' : 'a Proc'
      when Method, UnboundMethod then "a Method (#{v.name})"
      when Class then "a Class (#{MODULE_TO_S.bind_call(v)})"
      when Module then "a Module (#{MODULE_TO_S.bind_call(v)})"
      when Float then FLOAT_TO_S.bind_call(v)
      else
        name = class_name(v)
        "#{name.match?(/\A[AEIOU]/) ? 'an' : 'a'} #{name}"
      end
    end

    def fail_at(v, at, why = 'which has no JSON form')
      raise Unserializable, "the result contains #{describe(v)} at #{at}, #{why}"
    end

    # A plain, frozen UTF-8 String of s (whatever its class or singleton methods), or
    # {"$base64" => …} for bytes that are not UTF-8.
    def string(s)
      s = STRING_NEW.call(s) # a plain String: no subclass or singleton to_json reaches the frame
      enc = s.encoding
      if [Encoding::UTF_8, Encoding::BINARY, Encoding::US_ASCII].include?(enc)
        s.force_encoding(Encoding::UTF_8)
        return FREEZE.bind_call(s) if s.valid_encoding?

        return FREEZE.bind_call({ '$base64' => plain_string([s].pack('m0')) })
      end
      FREEZE.bind_call(s.encode(Encoding::UTF_8))
    rescue EncodingError
      FREEZE.bind_call({ '$base64' => plain_string([s].pack('m0')) })
    end

    def key_string(k)
      if string?(k)
        v = string(k)
        return string?(v) ? v : v['$base64']
      end
      return key_string(k.to_s) if IS_A.bind_call(k, Symbol)
      return 'null' if k.nil?

      text = k.to_s
      string?(text) ? key_string(text) : key_string(k.inspect)
    end

    UNSERIALIZABLE = [Proc, Method, UnboundMethod, Module, IO, Thread, Binding, Fiber, Mutex,
                      Thread::Queue, ConditionVariable, Random].freeze

    def plain(v, at, depth, active)
      case v
      when nil, true, false then return v
      when Integer
        if v.abs >= INT_LIMIT
          raise Unserializable, "the result contains an Integer of about #{(v.bit_length * 0.30103).to_i + 1} digits at #{at}, " \
                                "beyond the range of JSON numbers (a double's, about 1.8e308)"
        end
        return v
      when Float
        fail_at(v, at) unless v.finite?
        return v
      when String then return string(v)
      when Symbol then return string(Symbol.instance_method(:to_s).bind_call(v))
      end
      raise Unserializable, "the result is nested deeper than #{MAX_DEPTH} levels at #{at}" if depth >= MAX_DEPTH

      id = v.__id__
      raise Unserializable, "the result contains a cycle: #{at} (#{describe(v)}) contains itself" if active[id]

      active[id] = true
      begin
        container(v, at, depth, active)
      ensure
        active.delete(id)
      end
    end

    # Plain data of v: Hashes and Arrays the harness makes, frozen once they are whole.
    def container(v, at, depth, active)
      FREEZE.bind_call(container_of(v, at, depth, active))
    end

    def list_of(items, at, depth, active)
      items.each_with_index.map { |x, i| plain(x, "#{at}[#{i}]", depth + 1, active) }
    end

    def container_of(v, at, depth, active)
      nxt = ->(x, where) { plain(x, where, depth + 1, active) }
      fail_at(v, at) if UNSERIALIZABLE.any? { |c| IS_A.bind_call(v, c) }
      case v
      when Hash
        out = {}
        v.each { |k, x| out[key_string(k)] = nxt.call(x, "#{at}[#{k.inspect}]") }
        return out
      when Array
        return list_of(v, at, depth, active)
      when Rational then return plain(v.to_f, at, depth, active)
      when Complex then fail_at(v, at)
      when Time
        return v.strftime(v.subsec.zero? ? '%Y-%m-%dT%H:%M:%S%:z' : '%Y-%m-%dT%H:%M:%S.%6N%:z')
      when Exception
        return { 'type' => class_name(v), 'message' => exception_message(v) }
      when Range
        if v.begin.nil? || v.end.nil? || (v.end.is_a?(Float) && v.end.infinite?)
          fail_at(v, at, 'an endless Range, which has no JSON form')
        end
        return list_of(v.to_a, at, depth, active)
      end
      if defined?(::Set) && v.is_a?(::Set)
        return list_of(v.to_a, at, depth, active)
      end
      if defined?(::Date) && v.is_a?(::Date) && v.respond_to?(:iso8601)
        return v.iso8601
      end
      if defined?(::BigDecimal) && v.is_a?(::BigDecimal)
        fail_at(v, at) unless v.finite?
        return plain(v.frac.zero? ? v.to_i : v.to_f, at, depth, active)
      end
      enumerable = IS_A.bind_call(v, ENUMERABLE)
      # Enumerable's own to_h (pairs of each) is not the object's form: a custom collection is
      # an array like the enumerators; a to_h of the object's class (Struct, OpenStruct, …) wins.
      if !IS_A.bind_call(v, Enumerator) && RESPOND_TO.bind_call(v, :to_h)
        to_h = METHOD_OF.bind_call(v, :to_h)
        unless same?(METHOD_OWNER.bind_call(to_h), ENUMERABLE)
          h = to_h.call
          return nxt.call(h, "#{at}.to_h") if IS_A.bind_call(h, Hash)
        end
      end
      ivars = INSTANCE_VARIABLES.bind_call(v)
      if IS_A.bind_call(v, Enumerator) || (enumerable && ivars.empty?)
        items = begin
          v.to_a
        rescue Exception => e # rubocop:disable Lint/RescueException -- NotImplementedError, exit, …
          raise Unserializable, "the result is #{describe(v)} that raised #{exception_text(e)} while it was turned into JSON"
        end
        return list_of(items, at, depth, active)
      end
      out = {}
      ivars.each do |iv|
        name = plain_string(iv.to_s.delete_prefix('@'))
        out[name] = nxt.call(INSTANCE_VARIABLE_GET.bind_call(v, iv), "#{at}.#{name}")
      end
      out
    end

    def serialize(value)
      plain(value, 'result', 0, {})
    rescue Unserializable => e
      raise CallError.new('SerializationError', exception_message(e))
    rescue SystemStackError
      raise CallError.new('SerializationError', 'the result is nested too deeply to turn into JSON')
    rescue Exception => e # rubocop:disable Lint/RescueException -- the code's to_h, each, … (exit too)
      raise CallError.new('SerializationError', "turning the result (#{describe(value)}) into JSON failed: #{exception_text(e)}")
    end

    # ------------------------------------------------------------------------------------------
    # A call

    # [success, result or error hash, signatureSource] of one call frame.
    def handle(frame)
      schema = frame['schema']
      source = schema.nil? ? 'convention' : 'schema'
      begin
        raise CallError.new('ProtocolError', "unsupported protocol version #{frame['v'].inspect}") if frame.fetch('v', 1) != 1

        args = frame['args'] || []
        kwargs = frame['kwargs'] || {}
        raise argument_error('args is not a list') unless args.is_a?(Array)
        raise argument_error('kwargs is not an object') unless kwargs.is_a?(Hash)

        name = frame['function']
        load_code(frame['file'] || '/tmp/.kiln/user_code.rb')
        callable = find(name)
        call, source = bind(callable, name, args, kwargs, schema)
        value = begin
          call.call
        rescue Exception => e # the code's own failure, whatever it is
          raise_from(e)
        end
        [true, serialize(value), source]
      rescue CallError => e
        source = e.source if e.source
        [false, error_hash(e.type, e.message, e.stack), source]
      end
    end

    # The call's id as plain data (taken before the code runs).
    def plain_id(id)
      return plain_string(id) if string?(id)
      return id if id.nil? || same?(CLASS_OF.bind_call(id), Integer)

      nil
    end

    def result_limit(frame)
      limit = frame['maxResultBytes']
      same?(CLASS_OF.bind_call(limit), Integer) && limit.positive? ? limit : nil
    end

    def main
      chan = take_channel
      while (frame = read_frame(chan))
        next unless frame['type'] == 'call'

        # Everything the result frame is built of is taken before the code runs.
        call_id = plain_id(frame['id'])
        limit = result_limit(frame)
        fallback_source = frame['schema'].nil? ? 'convention' : 'schema'
        success, payload, source = begin
          handle(frame)
        rescue Exception => e # rubocop:disable Lint/RescueException -- a fault of the harness: still one answer
          [false, error_hash('InternalError', "the harness failed: #{exception_text(e)}"), fallback_source]
        end
        source = fallback_source unless %w[schema inferred convention].include?(source)
        data = begin
          encode_frame(call_id, success, payload, source, limit)
        rescue Exception => e # rubocop:disable Lint/RescueException
          encode_frame(call_id, false, error_hash('InternalError', "the harness failed: #{exception_text(e)}"),
                       fallback_source, limit)
        end
        flush_output
        IO_WRITE.bind_call(chan, data)
      end
      flush_output
      Kernel.exit!(0)
    end
  end
end

KilnHarness.main
