-- Admit one session record unless its token is at the per-token cap, and tell the nodes that
-- need to know. Records of nodes that the registering node holds dead are pruned first, so a
-- dead node's leftovers never block a reconnecting gateway.
--
-- Who is told (a `registered` notice on each one's notice channel, in the same atomic step as
-- the write): every other node that held a record of the token, dead or not (its one-node fast
-- path ends, see Hub::fast_candidates), and every other node in the token's readers set (it
-- caches the token's records, see track.lua). Nobody else: the cost of a registration does not
-- grow with the number of nodes. The notice channels are classic channels, so that the script can
-- publish to them from the token's slot on a Redis Cluster.
--
-- The script touches the token's two keys, both in the token's slot; the caller adds the
-- member to its node set beside it (and takes it back when the token is full).
--
-- KEYS[1] token hash   {P}:tok:{H}          (session id -> record JSON)
-- KEYS[2] readers set  {P}:rdr:{H}          (node ids, expiring)
-- ARGV[1] session id
-- ARGV[2] record JSON
-- ARGV[3] max sessions per token
-- ARGV[4] the registering node's id (its own records are never pruned here)
-- ARGV[5], ARGV[6] what goes before and after a node id to name its notice channel
-- ARGV[7] the notice to publish when admitted
-- ARGV[8..] nodes the registering node holds dead
-- Returns 0 token full, 1 admitted (only this node holds the token), 2 admitted (another live
-- node holds a record of it too).
local dead = {}
for i = 8, #ARGV do
  dead[ARGV[i]] = true
end
local shared = 1
local told = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, rec = pcall(cjson.decode, all[i + 1])
  if not ok or type(rec) ~= 'table' then
    redis.call('HDEL', KEYS[1], all[i])
  elseif dead[rec.node] then
    redis.call('HDEL', KEYS[1], all[i])
    -- Told all the same: the registering node's judgement may be a heartbeat old, and a node
    -- that was only paused answers its token from its hub until it hears of this session.
    if rec.node ~= ARGV[4] then
      told[rec.node] = true
    end
  elseif rec.node ~= ARGV[4] then
    shared = 2
    told[rec.node] = true
  end
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return shared
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
for _, reader in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if reader ~= ARGV[4] then
    told[reader] = true
  end
end
for node in pairs(told) do
  redis.call('PUBLISH', ARGV[5] .. node .. ARGV[6], ARGV[7])
end
return shared
