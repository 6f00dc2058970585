-- Appends one chat to a room, atomically: the idempotency check, the room's next seq, the
-- entry in the room's stream, and the publish to every node. Redis runs a script whole,
-- so per room the seqs, the stream and the channel agree on one order.
--
-- KEYS[1] the room's seq counter   KEYS[2] the room's stream   KEYS[3] the room's first seq
-- KEYS[4] the dataset's epoch      KEYS[5] the resend key ('' when the chat has no id)
-- KEYS[6] the global seq floor (raised when Redis restarted and may have lost writes)
-- ARGV[1] the floor: the highest seq the calling node has seen in the room
-- ARGV[2], ARGV[3] the frame's text before and after its seq
-- ARGV[4] the stream's length bound   ARGV[5] the channel   ARGV[6] the room id
-- ARGV[7] seconds a resend key is kept   ARGV[8] now, in Unix milliseconds (a new epoch)
--
-- Returns {1, seq, ''} for a new chat, {0, seq, frame} for a resend of a chat stored as
-- seq whose entry the stream still keeps. A resend whose original was trimmed is stored
-- again, as a new chat (as on one node: resends are recognized while their original is kept).
-- Seqs are returned and written as decimal strings: Lua numbers are doubles, and their
-- default formatting loses digits past 14.

if KEYS[5] ~= '' then
  local original = redis.call('GET', KEYS[5])
  if original then
    local id = original .. '-1'
    local kept = redis.call('XRANGE', KEYS[2], id, id)
    if #kept > 0 then
      return {0, original, kept[1][2][2]}
    end
  end
end

local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
if seq == 0 then
  -- A room this dataset has never seen. Its seqs start above the dataset's epoch (the
  -- millisecond the dataset began, times 1000): if Redis loses its data, the new epoch is
  -- later, so no seq handed out before can be handed out again unless a room took more
  -- than a thousand chats a millisecond on average.
  local epoch = redis.call('GET', KEYS[4])
  if not epoch then
    epoch = ARGV[8]
    redis.call('SET', KEYS[4], epoch)
  end
  seq = tonumber(epoch) * 1000
  redis.call('SET', KEYS[3], string.format('%d', seq + 1))
end
local floor = tonumber(ARGV[1])
if seq < floor then
  -- The node saw a later seq than Redis has: Redis lost its newest writes.
  seq = floor
end
local global = tonumber(redis.call('GET', KEYS[6]) or '0')
if seq < global then
  -- Redis restarted from a dataset that may miss writes (restarted.lua): start above
  -- every seq that can have been handed out before.
  seq = global
end
seq = seq + 1
local s = string.format('%d', seq)
redis.call('SET', KEYS[1], s)
local frame = ARGV[2] .. s .. ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], s .. '-1', 'f', frame)
if KEYS[5] ~= '' then
  redis.call('SET', KEYS[5], s, 'EX', ARGV[7])
end
redis.call('PUBLISH', ARGV[5], ARGV[6] .. '\n' .. s .. '\n' .. frame)
return {1, s, ''}
