-- Adds a node to a token's readers set for the next TTL: until then every new registration of
-- the token is announced to it (register.lua). The node caches the token's records only once
-- this has returned, from lookups sent after it.
--
-- KEYS[1] readers set  {P}:rdr:{H}
-- ARGV[1] the reading node's id
-- ARGV[2] TTL in ms. It is the whole set's, and only ever lengthened (a node configured with a
--         shorter TTL never cuts another's membership short); a node that stopped reading
--         stays a member while others renew it, and is told of registrations it no longer
--         needs: harmless.
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
