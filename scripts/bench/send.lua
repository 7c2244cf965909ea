-- wrk script for scripts/bench/send.py: the request each connection sends, and a JSON summary.
-- Arguments (after `--`): mode (ping | send | quote), then the API key for send and quote.
-- Every request has its own body (a counter per thread), so no two sends are the same message.

local threads = {}
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_no", next_thread)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "ping"
  statuses = {}
  counter = 0
  if mode ~= "ping" then
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer " .. args[2]
  end
  if mode == "send" then
    path = "/v1/messages"
  elseif mode == "quote" then
    path = "/v1/quotes"
  else
    path = "/ping"
  end
end

function request()
  if mode == "ping" then
    return wrk.format("GET", path)
  end
  counter = counter + 1
  local n = thread_no * 1000000 + counter
  local body = string.format(
    '{"to":"+1415555%04d","message":"Order %d shipped"}', n % 10000, n
  )
  return wrk.format(nil, path, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, '
      .. '"p99": %d, "max": %d, "mean": %.1f}, "statuses": {%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, table.concat(parts, ", ")
  ))
end
