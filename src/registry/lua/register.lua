-- Admit one session record unless its token is at the per-token cap, and tell every node.
-- Records of nodes that are no longer alive are pruned first, so a dead node's leftovers never
-- block a reconnecting gateway. The notice on the events channel lets a node that holds the
-- token learn that another node now holds it too (see Hub::fast_candidates).
--
-- KEYS[1] token hash   {P}:tok:{H}          (session id -> record JSON)
-- KEYS[2] node set     {P}:node:{N}:sessions
-- KEYS[3] heartbeats   {P}:nodes            (node -> alive-until ms)
-- ARGV[1] session id
-- ARGV[2] record JSON
-- ARGV[3] max sessions per token
-- ARGV[4] node-set member "{H}:{session}"
-- ARGV[5] the registering node's id (its own records are never pruned here)
-- ARGV[6] the events channel {P}:events
-- ARGV[7] the notice to publish there when admitted
-- Returns 0 token full, 1 admitted (only this node holds the token), 2 admitted (another live
-- node holds a record of it too).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local shared = 1
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, rec = pcall(cjson.decode, all[i + 1])
  if not ok then
    redis.call('HDEL', KEYS[1], all[i])
  elseif rec.node ~= ARGV[5] then
    local until_ms = redis.call('ZSCORE', KEYS[3], rec.node)
    if not until_ms or tonumber(until_ms) < now then
      redis.call('HDEL', KEYS[1], all[i])
    else
      shared = 2
    end
  end
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return shared
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return shared
