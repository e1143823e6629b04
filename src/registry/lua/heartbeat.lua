-- Marks this node alive until now + TTL (Redis clock, so nodes' clocks never matter) and
-- reports the cluster's view.
--
-- KEYS[1] heartbeats   {P}:nodes
-- ARGV[1] this node's id
-- ARGV[2] TTL in ms
-- ARGV[3] the most dead nodes to report
-- Returns { fresh, alive, dead_1, dead_2, ... }: fresh = 1 when this node had no entry (first
-- beat, Redis restarted empty, or swept after a pause: every session must be re-asserted),
-- alive = nodes alive now, then nodes whose TTL ran out (to sweep).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fresh = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local alive = redis.call('ZCOUNT', KEYS[1], now, '+inf')
local out = { fresh, alive }
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, n in ipairs(dead) do
  out[#out + 1] = n
end
return out
