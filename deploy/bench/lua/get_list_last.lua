-- GET list limit=100 on the last page, by cursor: the same 100 rows and index scan as get_list,
-- but nothing after them, so no Link header. get_list / get_list_last = the cost of the Link.
-- The cursor comes from the Link of the page before (the first answers); until then, that page.
local last_page = nil
local count_response = response

function response(status, headers, body)
  count_response(status, headers, body)
  if last_page == nil then
    local link = headers["link"] or headers["Link"]
    if link ~= nil then
      last_page = string.match(link, "^<([^>]+)>")
    end
  end
end

request = function()
  if last_page == nil then
    return wrk.format("GET", "/heroes/?offset=" .. (max_id - 200) .. "&limit=100")
  end
  return wrk.format("GET", last_page)
end
