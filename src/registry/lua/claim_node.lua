-- The first and last step of removing a node's records on a Redis Cluster, where one script
-- cannot reach the token keys (they live in other slots).
--
-- KEYS[1] heartbeats   {P}:nodes
-- ARGV[1] the node's id
-- ARGV[2] "claim": unless the node is alive, mark its entry with score 0 (still dead for every
--         heartbeat's report, so that a sweep cut short is resumed by the next one; and a node
--         that comes back finds it and re-asserts). Returns -1 when the node is alive.
--         "finish": remove the entry if it is still the claim marker. Returns 1 if removed.
--         "leave": remove the entry (the node's own drain). Returns 1 if removed.
if ARGV[2] == 'claim' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local until_ms = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if until_ms and tonumber(until_ms) >= now then
    return -1
  end
  if until_ms then
    redis.call('ZADD', KEYS[1], 0, ARGV[1])
  end
  return 0
elseif ARGV[2] == 'finish' then
  if redis.call('ZSCORE', KEYS[1], ARGV[1]) == '0' then
    return redis.call('ZREM', KEYS[1], ARGV[1])
  end
  return 0
end
return redis.call('ZREM', KEYS[1], ARGV[1])
