-- Every request carries a header value never sent before (a counter in X-Bench-Seq): the
-- cache still answers HIT (the header is in neither the cache key nor a Vary), but the WAF's
-- memos miss on every view over the headers, as they do for real clients whose cookies and
-- tokens differ. The summary comes from report.lua's done(), loaded from this file's folder.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "report.lua")

local sequence = 0
request = function()
  sequence = sequence + 1
  wrk.headers["X-Bench-Seq"] = tostring(sequence)
  return wrk.format()
end
