-- Shared by every scenario (prepended by the harness).
-- setup() gives each wrk thread an id; init() reads "<nonce> <max_id>" passed after `--`;
-- response() counts non-2xx answers (wrk itself only counts >= 400); done() prints one JSON
-- line with the counts and the latency distribution.
local threads = {}
local next_id = 1

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  nonce = args[1] or "x"
  max_id = tonumber(args[2] or "10000")
  counter = 0
  non2xx = 0
  math.randomseed(os.time() + id * 7919)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local non2xx_total = 0
  for _, thread in ipairs(threads) do
    non2xx_total = non2xx_total + (thread:get("non2xx") or 0)
  end
  -- The latency at every 0.1 %: the harness merges rounds from these.
  local quantiles = {}
  for i = 1, 1000 do
    quantiles[i] = string.format("%d", latency:percentile(i / 10))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,'
      .. '"write":%d,"status":%d,"timeout":%d,"quantiles_us":[%s]}\n',
    summary.requests, summary.duration, non2xx_total, e.connect, e.read, e.write, e.status,
    e.timeout, table.concat(quantiles, ",")))
end

local json_headers = { ["Content-Type"] = "application/json" }

function get_one()
  return wrk.format("GET", "/heroes/" .. math.random(1, max_id))
end

function get_list()
  return wrk.format("GET", "/heroes/?offset=0&limit=100")
end

function post_hero()
  counter = counter + 1
  local body = string.format(
    '{"name":"bench-%s-%d-%d","secret_name":"secret-%d","age":%d}',
    nonce, id, counter, counter, counter % 100)
  return wrk.format("POST", "/heroes/", json_headers, body)
end
