-- Marks this node alive until now + TTL (Redis clock, so nodes' clocks never matter) and
-- reports the cluster's view.
--
-- KEYS[1] heartbeats   {P}:nodes
-- KEYS[2] node figures {{P}:nodes}:stats  (node id -> JSON, for the status page; the hash tag
--                      puts it in the slot of KEYS[1])
-- ARGV[1] this node's id
-- ARGV[2] TTL in ms
-- ARGV[3] the most dead nodes to report
-- ARGV[4] this node's figures (JSON), or '' to leave them
-- KEYS[3] unsettled    {{P}:nodes}:unsettled  (nodes whose records may be missing; same slot)
-- ARGV[5] '1' when this node holds sessions
-- ARGV[6] '1' when this node's last re-assertion worked (or none was needed)
-- A node with sessions is unsettled from a beat that finds its entry missing (Redis lost data:
-- its records are gone until it re-asserts them) or while its re-assertion fails, and settled
-- again by its first beat after one worked. Unsettled nodes whose entry ran out are dropped.
-- The figures of nodes reported dead are deleted (a swept node was reported first), and those
-- of nodes no longer in KEYS[1] (drained) once the hash holds more fields than KEYS[1] members.
-- Returns { fresh, alive, unsettled, dead_1, dead_2, ... }: fresh = 1 when this node's entry was missing
-- (first beat, Redis restarted empty or failed over to a replica that missed it), had run out
-- (a pause or an outage longer than the TTL), or was claimed by a sweep (score 0): every session
-- must be re-asserted. alive = nodes alive now; unsettled = other nodes alive and unsettled
-- (while there are any, "no session" is unsure); then nodes whose TTL ran out (to sweep).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prior = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
end
local fresh = 0
if not prior or tonumber(prior) < now then
  fresh = 1
end
if ARGV[5] == '1' and (fresh == 1 or ARGV[6] ~= '1') then
  redis.call('SADD', KEYS[3], ARGV[1])
else
  redis.call('SREM', KEYS[3], ARGV[1])
end
local unsettled = 0
for _, n in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local score = redis.call('ZSCORE', KEYS[1], n)
  if not score or tonumber(score) < now then
    redis.call('SREM', KEYS[3], n)
  elseif n ~= ARGV[1] then
    unsettled = unsettled + 1
  end
end
local alive = redis.call('ZCOUNT', KEYS[1], now, '+inf')
local out = { fresh, alive, unsettled }
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, n in ipairs(dead) do
  out[#out + 1] = n
  redis.call('HDEL', KEYS[2], n)
end
if redis.call('HLEN', KEYS[2]) > redis.call('ZCARD', KEYS[1]) then
  for _, n in ipairs(redis.call('HKEYS', KEYS[2])) do
    if not redis.call('ZSCORE', KEYS[1], n) then
      redis.call('HDEL', KEYS[2], n)
    end
  end
end
return out
