-- Admit one session record unless its token is at the per-token cap, and tell every node.
-- Records of nodes that the registering node holds dead are pruned first, so a dead node's
-- leftovers never block a reconnecting gateway. The notice on the events channel lets a node
-- that holds the token learn that another node now holds it too (see Hub::fast_candidates).
-- The script touches one key, so that it runs in the token's slot on a Redis Cluster; the
-- caller adds the member to its node set beside it (and takes it back when the token is full).
--
-- KEYS[1] token hash   {P}:tok:{H}          (session id -> record JSON)
-- ARGV[1] session id
-- ARGV[2] record JSON
-- ARGV[3] max sessions per token
-- ARGV[4] the registering node's id (its own records are never pruned here)
-- ARGV[5] the events channel {P}:events (a classic channel: on a Cluster it reaches every node)
-- ARGV[6] the notice to publish there when admitted
-- ARGV[7..] nodes the registering node holds dead
-- Returns 0 token full, 1 admitted (only this node holds the token), 2 admitted (another live
-- node holds a record of it too).
local dead = {}
for i = 7, #ARGV do
  dead[ARGV[i]] = true
end
local shared = 1
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, rec = pcall(cjson.decode, all[i + 1])
  if not ok or type(rec) ~= 'table' then
    redis.call('HDEL', KEYS[1], all[i])
  elseif dead[rec.node] then
    redis.call('HDEL', KEYS[1], all[i])
  elseif rec.node ~= ARGV[4] then
    shared = 2
  end
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return shared
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return shared
