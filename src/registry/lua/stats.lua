-- Every live node's figures for the cluster status page, read in one step.
--
-- KEYS[1] heartbeats   {P}:nodes
-- KEYS[2] node figures {{P}:nodes}:stats
-- Returns { node_1, figures_1, node_2, figures_2, ... } for the nodes whose heartbeat has not
-- run out.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[2])
local out = {}
for i = 1, #all, 2 do
  local until_ms = redis.call('ZSCORE', KEYS[1], all[i])
  if until_ms and tonumber(until_ms) >= now then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
