-- Pipelining for wrk: every socket write carries DEPTH requests back to back.
-- Usage: wrk ... -s bench/scripts/pipeline.lua URL -- [DEPTH] [PATH]
-- wrk counts each response it parses, so requests/s is per request, not per batch.

local payload

function init(args)
  local depth = tonumber(args[1]) or 16
  local path = args[2] or wrk.path
  local parts = {}
  for i = 1, depth do
    parts[i] = wrk.format(nil, path)
  end
  payload = table.concat(parts)
end

function request()
  return payload
end
