-- The token's records whose node is alive, in one round trip.
--
-- KEYS[1] token hash   {P}:tok:{H}
-- KEYS[2] heartbeats   {P}:nodes
-- Returns a flat array of record JSON strings (order unspecified; the caller sorts).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local alive = {}
local vals = redis.call('HVALS', KEYS[1])
for _, v in ipairs(vals) do
  local ok, rec = pcall(cjson.decode, v)
  if ok and rec.node then
    local a = alive[rec.node]
    if a == nil then
      local until_ms = redis.call('ZSCORE', KEYS[2], rec.node)
      a = (until_ms and tonumber(until_ms) >= now) or false
      alive[rec.node] = a
    end
    if a then
      out[#out + 1] = v
    end
  end
end
return out
