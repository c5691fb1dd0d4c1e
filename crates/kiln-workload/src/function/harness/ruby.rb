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
  MAIN = TOPLEVEL_BINDING.receiver
  METHOD_OF = Kernel.instance_method(:method)

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
      head = chan.read(4)
      return nil if head.nil? || head.empty?
      protocol_fail('the channel ended inside a frame\'s length') if head.bytesize < 4
      n = head.unpack1('N')
      body = n.zero? ? ''.b : chan.read(n)
      protocol_fail("the channel ended inside a frame of #{n} bytes") if body.nil? || body.bytesize < n
      body.force_encoding(Encoding::UTF_8)
      protocol_fail('a frame is not UTF-8') unless body.valid_encoding?
      frame = begin
        JSON.parse(body)
      rescue JSON::ParserError => e
        protocol_fail("a frame is not JSON: #{e.message}")
      end
      protocol_fail('a frame is not a JSON object') unless frame.is_a?(Hash)
      frame
    end

    def encode_frame(reply)
      body = JSON.generate(reply).b
      [body.bytesize].pack('N') + body
    end

    def flush_output
      [$stdout, $stderr, STDOUT, STDERR].uniq.each do |io|
        io.flush
      rescue StandardError
        nil
      end
    end

    # ------------------------------------------------------------------------------------------
    # Errors

    def user_backtrace(e)
      (e.backtrace || []).reject { |line| line.start_with?(HARNESS_FILE) }
    end

    def exception_error(e, file = nil)
      type = e.class.name || e.class.to_s
      if e.is_a?(SyntaxError)
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
      message = if e.is_a?(SystemExit)
                  "the function called exit(#{e.status})"
                else
                  begin
                    e.message.to_s
                  rescue StandardError
                    type
                  end
                end
      { 'message' => utf8(message), 'type' => type, 'stack' => utf8(user_backtrace(e).join("\n")) }
    end

    def utf8(s)
      s = s.to_s.dup
      s.force_encoding(Encoding::UTF_8)
      s.valid_encoding? ? s : s.scrub('?')
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

    def find(name)
      raise CallError.new('FunctionNotFound', 'no function name was given') unless name.is_a?(String) && !name.empty?

      if (m = /\A(.+)(?:\.|::)([^.:]+)\z/.match(name))
        owner = begin
          Object.const_get(m[1])
        rescue NameError, ArgumentError
          nil
        end
        return owner.method(m[2]) if owner.respond_to?(m[2])
      elsif name.match?(/\A[[:alpha:]_][[:alnum:]_]*[?!]?\z/)
        sym = name.to_sym
        if Object.private_method_defined?(sym, false) || Object.method_defined?(sym, false)
          return METHOD_OF.bind_call(MAIN, sym)
        end
        if name.match?(/\A[[:upper:]]/) && Object.const_defined?(sym, false)
          value = Object.const_get(sym)
          return value.method(:new) if value.is_a?(Class)
          return value if value.is_a?(Proc)
          return value.method(:call) if value.respond_to?(:call)

          raise CallError.new('FunctionNotFound',
                              "'#{name}' is defined in the code but is a #{value.class}, not a function")
        end
      end
      raise CallError.new('FunctionNotFound', "function '#{name}' is not defined in the code")
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
          raise argument_error("got multiple values for argument '#{pname}' of #{fname}") if kwargs.key?(pname)

          value = args[i]
        elsif kwargs.key?(pname)
          value = kwargs.delete(pname)
        elsif has_default
          value = p['default']
          supplied = false
        elsif required
          raise argument_error("missing required argument '#{pname}' of #{fname}")
        else
          value = nil
          present = false
          supplied = false
        end
        if supplied && !type_matches?(p['type'], value)
          article = p['type'].to_s.match?(/\A[aeiou]/) ? 'an' : 'a'
          raise argument_error("argument '#{pname}' of #{fname} must be #{article} #{p['type']}, got #{json_type(value)}")
        end
        values << [pname, present, value]
      end
      extra = args[params.size..] || []
      if !extra.empty? && !schema['variadic']
        raise argument_error("#{fname} takes #{params.size} argument#{params.size == 1 ? '' : 's'} but #{args.size} " \
                             "were given (argument #{params.size + 1} has no parameter)")
      end
      if !kwargs.empty? && !schema['acceptsKwargs']
        raise argument_error("#{fname} got an unexpected keyword argument '#{kwargs.keys.first}'")
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
          raise argument_error("got multiple values for argument '#{k}' of #{fname}")
        elsif !post.empty? || (rest && args.size > lead.size + opt.size)
          raise argument_error("argument '#{k}' of #{fname} cannot be given by name here: pass it in args")
        elsif at > positional.size
          skipped = names[positional.size]
          if opt.include?(skipped)
            raise argument_error("argument '#{k}' of #{fname} cannot be given by name without the optional " \
                                 "argument '#{skipped}' before it (Ruby cannot skip an optional argument)")
          end
          raise argument_error("missing required argument '#{skipped}' of #{fname}")
        end
        positional << v
      end
      required = lead.size + post.size
      if positional.size < required
        raise argument_error("missing required argument '#{(lead + post)[positional.size]}' of #{fname}")
      end
      if !rest && positional.size > required + opt.size
        most = required + opt.size
        raise argument_error("#{fname} takes #{opt.empty? ? '' : 'at most '}#{most} argument#{most == 1 ? '' : 's'} " \
                             "but #{positional.size} were given (argument #{most + 1} has no parameter)")
      end
      missing = keyreq.find { |k| !keywords.key?(k) }
      raise argument_error("missing required keyword argument '#{missing}' of #{fname}") if missing

      unless leftovers.empty?
        raise argument_error("#{fname} got an unexpected keyword argument '#{leftovers.keys.first}'") unless keyrest

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
      when Class then "a Class (#{v})"
      when Module then "a Module (#{v})"
      when Float then v.to_s
      else "#{v.class.to_s.match?(/\A[AEIOU]/) ? 'an' : 'a'} #{v.class}"
      end
    end

    def fail_at(v, at, why = 'which has no JSON form')
      raise Unserializable, "the result contains #{describe(v)} at #{at}, #{why}"
    end

    def string(s)
      enc = s.encoding
      if [Encoding::UTF_8, Encoding::BINARY, Encoding::US_ASCII].include?(enc)
        u = enc == Encoding::UTF_8 ? s : s.dup.force_encoding(Encoding::UTF_8)
        return u if u.valid_encoding?

        return { '$base64' => [s].pack('m0') }
      end
      s.encode(Encoding::UTF_8)
    rescue EncodingError
      { '$base64' => [s].pack('m0') }
    end

    def key_string(k)
      case k
      when String
        v = string(k)
        v.is_a?(String) ? v : v['$base64']
      when Symbol then key_string(k.to_s)
      when nil then 'null'
      else key_string(k.to_s)
      end
    end

    UNSERIALIZABLE = [Proc, Method, UnboundMethod, Module, IO, Thread, Binding, Fiber, Mutex,
                      Thread::Queue, ConditionVariable, Random].freeze

    def plain(v, at, depth, active)
      case v
      when nil, true, false, Integer then return v
      when Float
        fail_at(v, at) unless v.finite?
        return v
      when String then return string(v)
      when Symbol then return string(v.to_s)
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

    def container(v, at, depth, active)
      nxt = ->(x, where) { plain(x, where, depth + 1, active) }
      fail_at(v, at) if UNSERIALIZABLE.any? { |c| v.is_a?(c) }
      case v
      when Hash
        out = {}
        v.each { |k, x| out[key_string(k)] = nxt.call(x, "#{at}[#{k.inspect}]") }
        return out
      when Array
        return v.each_with_index.map { |x, i| nxt.call(x, "#{at}[#{i}]") }
      when Rational then return v.to_f
      when Complex then fail_at(v, at)
      when Time
        return v.strftime(v.subsec.zero? ? '%Y-%m-%dT%H:%M:%S%:z' : '%Y-%m-%dT%H:%M:%S.%6N%:z')
      when Exception
        return { 'type' => v.class.name.to_s, 'message' => utf8(v.message) }
      when Range
        if v.begin.nil? || v.end.nil? || (v.end.is_a?(Float) && v.end.infinite?)
          fail_at(v, at, 'an endless Range, which has no JSON form')
        end
        return v.to_a.each_with_index.map { |x, i| nxt.call(x, "#{at}[#{i}]") }
      end
      if defined?(::Set) && v.is_a?(::Set)
        return v.to_a.each_with_index.map { |x, i| nxt.call(x, "#{at}[#{i}]") }
      end
      if defined?(::Date) && v.is_a?(::Date) && v.respond_to?(:iso8601)
        return v.iso8601
      end
      if defined?(::BigDecimal) && v.is_a?(::BigDecimal)
        fail_at(v, at) unless v.finite?
        return v.frac.zero? ? v.to_i : v.to_f
      end
      if v.respond_to?(:to_h) && !v.is_a?(Enumerator)
        h = v.to_h
        return nxt.call(h, "#{at}.to_h") if h.is_a?(Hash)
      end
      if v.is_a?(Enumerator) || (v.is_a?(Enumerable) && v.instance_variables.empty?)
        items = begin
          v.to_a
        rescue StandardError => e
          raise Unserializable, "the result is #{describe(v)} that raised #{e.class} while it was turned into JSON: #{e.message}"
        end
        return items.each_with_index.map { |x, i| nxt.call(x, "#{at}[#{i}]") }
      end
      out = {}
      v.instance_variables.each do |iv|
        name = iv.to_s.delete_prefix('@')
        out[name] = nxt.call(v.instance_variable_get(iv), "#{at}.#{name}")
      end
      out
    end

    def serialize(value)
      plain(value, 'result', 0, {})
    rescue Unserializable => e
      raise CallError.new('SerializationError', e.message)
    rescue SystemStackError
      raise CallError.new('SerializationError', 'the result is nested too deeply to turn into JSON')
    rescue StandardError => e
      raise CallError.new('SerializationError', "turning the result (a #{value.class}) into JSON failed: #{e.class}: #{e.message}")
    end

    # ------------------------------------------------------------------------------------------
    # A call

    def handle(frame)
      reply = { 'v' => 1, 'id' => frame['id'], 'type' => 'result' }
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
        reply['success'] = true
        reply['result'] = serialize(value)
      rescue CallError => e
        source = e.source if e.source
        reply.delete('result')
        reply['success'] = false
        reply['error'] = { 'message' => utf8(e.message), 'type' => e.type, 'stack' => utf8(e.stack) }
      end
      reply['signatureSource'] = source
      reply
    end

    def main
      chan = take_channel
      while (frame = read_frame(chan))
        next unless frame['type'] == 'call'

        reply = begin
          handle(frame)
        rescue StandardError => e # a fault of the harness itself: still one answer
          { 'v' => 1, 'id' => frame['id'], 'type' => 'result', 'success' => false,
            'error' => { 'message' => utf8("the harness failed: #{e.class}: #{e.message}"), 'type' => 'InternalError', 'stack' => '' },
            'signatureSource' => frame['schema'].nil? ? 'convention' : 'schema' }
        end
        data = begin
          encode_frame(reply)
        rescue StandardError => e
          encode_frame({ 'v' => 1, 'id' => reply['id'], 'type' => 'result', 'success' => false,
                         'error' => { 'message' => "the result frame could not be written: #{e.message}",
                                      'type' => 'SerializationError', 'stack' => '' },
                         'signatureSource' => reply['signatureSource'] })
        end
        flush_output
        chan.write(data)
      end
      flush_output
      Kernel.exit!(0)
    end
  end
end

KilnHarness.main
