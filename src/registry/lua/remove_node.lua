-- Removes every record of a node on one Redis (standalone or Sentinel's primary), atomically:
-- its own drain ("force"), or a sweep by a peer of a node whose heartbeat ran out ("dead",
-- fenced: a node that beat again since is left alone). Token keys are named from the members,
-- which a Redis Cluster forbids; there the same steps run one by one (claim_node.lua,
-- RedisRegistry::remove_node).
--
-- KEYS[1] heartbeats   {P}:nodes
-- KEYS[2] node set     {P}:node:{N}:sessions
-- ARGV[1] the node's id
-- ARGV[2] token key prefix "{P}:tok:{" (the key is prefix .. hash .. "}")
-- ARGV[3] "force" or "dead"
-- Returns the number of records removed, or -1 when the node is alive again.
if ARGV[3] == 'dead' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local until_ms = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if until_ms and tonumber(until_ms) >= now then
    return -1
  end
end
local removed = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local sep = string.find(m, ':', 1, true)
  if sep then
    removed = removed + redis.call('HDEL', ARGV[2] .. string.sub(m, 1, sep - 1) .. '}', string.sub(m, sep + 1))
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return removed
