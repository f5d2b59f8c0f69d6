-- wrk script of benchmarks/refresh.py: refresh-token chains, or one fixed request, with
-- every answer's status counted and the results written as JSON for the Python side.
--
-- Configured through environment variables (setup() and done() run in wrk's main Lua
-- state, which never sees the script arguments after "--"):
--
--   BENCH_MODE           refresh (default): POST refresh_token chains; get: a fixed GET of
--                        the URL's path; post: a fixed POST of BENCH_BODY
--   BENCH_RESULT         where done() writes its JSON summary (default: stdout)
--   BENCH_AUTHORIZATION  an Authorization header value (post: HTTP Basic), or unset
--   BENCH_USER_AGENT     the User-Agent header (authserver binds a family to the user-agent
--                        family it signed in with; default authserver-bench/1.0)
--   BENCH_BODY           post: the request body (form-encoded)
-- refresh only:
--   BENCH_TOKENS         a file of refresh tokens, one per line; each wrk thread gets a
--                        disjoint slice (every BENCH_THREADS-th line)
--   BENCH_THREADS        wrk's -t (wrk starts each thread right after its setup(), so the
--                        slices are dealt by index, not after all threads are known)
--   BENCH_CLIENT_ID      the client_id form field
--   BENCH_EXTRA_FORM     extra form fields, already encoded ("a=b&c=d"), or empty
--   BENCH_ACTIVE_MS      send requests only during this many ms after the thread started;
--                        then each connection, once its answer is in, sits idle. Run wrk a
--                        little longer (-d) so every request in flight gets its answer and
--                        no token's fate is unknown when wrk stops
--   BENCH_TOKENS_OUT     where done() writes the tokens still valid, one per line, for the
--                        next run (the chains continue across runs)
--
-- Chains: a thread keeps its tokens on a stack. request() pops one (so a token is never in
-- flight twice) and presents it; a 200 answer's refresh_token is pushed back, so the
-- connection that just got it continues the chain (wrk calls a connection's response()
-- before its next request()). A non-200 answer drops the presented token, whose fate is
-- unknown, and the next request takes a spare from the bottom of the stack. Tokens beyond
-- one per connection are those spares. A thread whose stack runs dry stops (counted as
-- "exhausted"): the run is then not clean. wrk calls request() once in the first thread
-- before it starts, to inspect the request, and never sends it: that token is dropped, so
-- give the runs one token more than connections + spares.

local ffi = require("ffi")
ffi.cdef [[
   typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
   int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now_ms()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
   return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local mode = os.getenv("BENCH_MODE") or "refresh"
local tokens_path = os.getenv("BENCH_TOKENS")
local tokens_out = os.getenv("BENCH_TOKENS_OUT")
local client_id = os.getenv("BENCH_CLIENT_ID") or ""
local extra_form = os.getenv("BENCH_EXTRA_FORM") or ""
local fixed_body = os.getenv("BENCH_BODY")
local authorization = os.getenv("BENCH_AUTHORIZATION")
local user_agent = os.getenv("BENCH_USER_AGENT") or "authserver-bench/1.0"
local result_path = os.getenv("BENCH_RESULT")
local active_ms = tonumber(os.getenv("BENCH_ACTIVE_MS") or "")

-- -- main state: deal the tokens, then summarise ------------------------------------------

local threads = {}
local all_tokens = nil

local function read_tokens(path)
   local tokens = {}
   local file = assert(io.open(path, "r"), "BENCH_TOKENS: cannot open " .. tostring(path))
   for line in file:lines() do
      local token = line:match("^%s*(%S+)%s*$")
      if token then
         tokens[#tokens + 1] = token
      end
   end
   file:close()
   return tokens
end

function setup(thread)
   threads[#threads + 1] = thread
   if mode ~= "refresh" then
      return
   end
   local count = assert(tonumber(os.getenv("BENCH_THREADS")), "set BENCH_THREADS to wrk -t")
   all_tokens = all_tokens or read_tokens(tokens_path)
   local slice = {}
   for i = #threads, #all_tokens, count do
      slice[#slice + 1] = all_tokens[i]
   end
   thread:set("stack", slice)
end

local function json_string(value)
   local escaped = tostring(value):gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
   end)
   return '"' .. escaped .. '"'
end

local function json_counts(counts)
   local parts = {}
   for key, value in pairs(counts) do
      parts[#parts + 1] = json_string(key) .. ":" .. string.format("%d", value)
   end
   table.sort(parts)
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local sums = {ok = 0, ok_in_window = 0, bad_body = 0, exhausted = 0, sent = 0}
   local statuses = {}
   local left = {}
   for _, thread in ipairs(threads) do
      for name, _ in pairs(sums) do
         sums[name] = sums[name] + (thread:get(name) or 0)
      end
      for kind, count in pairs(thread:get("statuses") or {}) do
         statuses[kind] = (statuses[kind] or 0) + count
      end
      for _, token in ipairs(thread:get("stack") or {}) do
         left[#left + 1] = token
      end
   end
   if tokens_out then
      local file = assert(io.open(tokens_out, "w"))
      for _, token in ipairs(left) do
         file:write(token, "\n")
      end
      file:close()
   end
   local function int(value)
      return string.format("%.0f", value)
   end
   local e = summary.errors
   local fields = {
      '"mode":' .. json_string(mode),
      '"threads":' .. #threads,
      '"duration_us":' .. int(summary.duration),
      '"active_ms":' .. (active_ms and int(active_ms) or "null"),
      '"requests":' .. int(summary.requests),
      '"bytes":' .. int(summary.bytes),
      '"sent":' .. int(sums.sent),
      '"ok":' .. int(sums.ok),
      '"ok_in_window":' .. int(sums.ok_in_window),
      '"bad_body":' .. int(sums.bad_body),
      '"exhausted":' .. int(sums.exhausted),
      '"tokens_left":' .. #left,
      '"statuses":' .. json_counts(statuses),
      '"socket_errors":' .. json_counts({connect = e.connect, read = e.read, write = e.write,
                                         timeout = e.timeout}),
      '"status_errors":' .. int(e.status),
      '"latency_us":{"p50":' .. int(latency:percentile(50)) .. ',"p90":'
         .. int(latency:percentile(90)) .. ',"p99":' .. int(latency:percentile(99))
         .. ',"max":' .. int(latency.max) .. ',"mean":' .. int(latency.mean) .. '}',
   }
   local text = "{" .. table.concat(fields, ",") .. "}\n"
   if result_path then
      local file = assert(io.open(result_path, "w"))
      file:write(text)
      file:close()
   else
      io.write(text)
   end
end

-- -- thread states: the requests ---------------------------------------------------------

ok, ok_in_window, bad_body, exhausted, sent = 0, 0, 0, 0, 0
statuses = {}
stack = stack or {}

local fixed_request = nil
local headers = nil
local prefix = nil
local active_until = nil

local function form_encode(value)
   return (value:gsub("[^%w%-%._~]", function(c)
      return string.format("%%%02X", c:byte())
   end))
end

local function in_window()
   return active_until == nil or now_ms() < active_until
end

function init(args)
   if active_ms then
      active_until = now_ms() + active_ms
   end
   headers = {["User-Agent"] = user_agent, ["Accept"] = "application/json"}
   if authorization and authorization ~= "" then
      headers["Authorization"] = authorization
   end
   if mode == "get" then
      fixed_request = wrk.format("GET", wrk.path, headers)
      return
   end
   headers["Content-Type"] = "application/x-www-form-urlencoded"
   if mode == "post" then
      fixed_request = wrk.format("POST", wrk.path, headers, fixed_body or "")
      return
   end
   prefix = "grant_type=refresh_token&client_id=" .. form_encode(client_id)
   if extra_form ~= "" then
      prefix = prefix .. "&" .. extra_form
   end
   prefix = prefix .. "&refresh_token="
end

if active_ms then
   -- After the active window a connection waits (an hour, i.e. until wrk stops) instead
   -- of sending: its last answer, and so its chain's newest token, is already in.
   function delay()
      if in_window() then
         return 0
      end
      return 3600000
   end
end

function request()
   sent = sent + 1
   if fixed_request then
      return fixed_request
   end
   local top = #stack
   local token = "exhausted"
   if top == 0 then
      exhausted = exhausted + 1
      wrk.thread:stop()
   else
      token = stack[top]
      stack[top] = nil
   end
   return wrk.format("POST", wrk.path, headers, prefix .. form_encode(token))
end

function response(status, _, body)
   if status ~= 200 then
      local code = body and body:match('"error"%s*:%s*"([^"]*)"')
      local kind = tostring(status) .. (code and (" " .. code) or "")
      statuses[kind] = (statuses[kind] or 0) + 1
      return
   end
   if fixed_request == nil then
      local token = body and body:match('"refresh_token"%s*:%s*"([^"]+)"')
      if not token then
         bad_body = bad_body + 1
         return
      end
      stack[#stack + 1] = token
   end
   ok = ok + 1
   if in_window() then
      ok_in_window = ok_in_window + 1
   end
end
