-- Run by every node on every new connection to Redis, before its first op: notices that
-- Redis restarted with a dataset it loaded from disk, and then raises the global seq floor
-- above every seq that can have been handed out.
--
-- A Redis that restarts from an RDB snapshot (or an append-only file fsynced only every
-- second) has lost the writes made since: rooms' seq counters go back, and a node that
-- does not remember the room's newest seq (one that restarted too) would hand the lost
-- seqs out again, to other chats. The floor makes every room's next seq later than the
-- restart's millisecond times 1000, the same bound as a new dataset's epoch.
--
-- KEYS[1] the run id of the Redis process this dataset was last seen on
-- KEYS[2] the global seq floor
-- ARGV[1] this Redis process's run id   ARGV[2] '1' when every write is fsynced before
-- it is answered (appendonly yes, appendfsync always): a restart then loses nothing
-- ARGV[3] now, in Unix milliseconds
--
-- Returns the floor it set, or 0 when nothing was lost (the same process, a fresh dataset,
-- or a durable one).

local seen = redis.call('GET', KEYS[1])
if seen == ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
if not seen or ARGV[2] == '1' then
  return 0
end
local floor = tonumber(ARGV[3]) * 1000
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if floor <= current then
  return 0
end
local s = string.format('%d', floor)
redis.call('SET', KEYS[2], s)
return s
