-- Admit one session record unless its token is at the per-token cap.
-- Records of nodes that are no longer alive are pruned first, so a dead node's leftovers never
-- block a reconnecting gateway.
--
-- KEYS[1] token hash   {P}:tok:{H}          (session id -> record JSON)
-- KEYS[2] node set     {P}:node:{N}:sessions
-- KEYS[3] heartbeats   {P}:nodes            (node -> alive-until ms)
-- ARGV[1] session id
-- ARGV[2] record JSON
-- ARGV[3] max sessions per token
-- ARGV[4] node-set member "{H}:{session}"
-- ARGV[5] this node's id (its own records are never pruned here)
-- Returns 1 admitted, 0 token full.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 1
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, rec = pcall(cjson.decode, all[i + 1])
  if not ok then
    redis.call('HDEL', KEYS[1], all[i])
  elseif rec.node ~= ARGV[5] then
    local until_ms = redis.call('ZSCORE', KEYS[3], rec.node)
    if not until_ms or tonumber(until_ms) < now then
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
