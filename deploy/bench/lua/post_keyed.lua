-- POST /heroes/ with a unique name and its own Idempotency-Key per request: the first use of
-- every key (stored with the write). post_keyed / post = the cost of the key.
local keyed_headers = { ["Content-Type"] = "application/json" }

request = function()
  counter = counter + 1
  local name = string.format("bench-%s-%d-%d", nonce, id, counter)
  keyed_headers["Idempotency-Key"] = name
  local body = string.format(
    '{"name":"%s","secret_name":"secret-%d","age":%d}', name, counter, counter % 100)
  return wrk.format("POST", "/heroes/", keyed_headers, body)
end
