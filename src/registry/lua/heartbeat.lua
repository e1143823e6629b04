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
-- The figures of nodes reported dead are deleted (a swept node was reported first), and those
-- of nodes no longer in KEYS[1] (drained) once the hash holds more fields than KEYS[1] members.
-- Returns { fresh, alive, dead_1, dead_2, ... }: fresh = 1 when this node's entry was missing
-- (first beat, Redis restarted empty or failed over to a replica that missed it), had run out
-- (a pause or an outage longer than the TTL), or was claimed by a sweep (score 0): every session
-- must be re-asserted. alive = nodes alive now, then nodes whose TTL ran out (to sweep).
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
local alive = redis.call('ZCOUNT', KEYS[1], now, '+inf')
local out = { fresh, alive }
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
