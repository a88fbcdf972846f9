-- 80 % GET one, 10 % GET list-100, 10 % POST.
request = function()
  local r = math.random(100)
  if r <= 80 then
    return get_one()
  elseif r <= 90 then
    return get_list()
  end
  return post_hero()
end
