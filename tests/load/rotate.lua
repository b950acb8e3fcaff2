-- rotate.lua: wrk script for tests/load.sh. Each request takes the next path from the
-- script arguments (wrk ... URL -- PATH...), round robin, starting at a different path in
-- each thread; GET only. Non-2xx answers are counted by wrk itself ("Non-2xx or 3xx").
local paths = {}
local i = 0
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter)
  table.insert(threads, thread)
end

function init(args)
  for _, p in ipairs(args) do table.insert(paths, p) end
  if #paths == 0 then table.insert(paths, "/healthz") end
  i = (offset or 0) % #paths
  statuses = {}
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then for k, v in pairs(s) do total[k] = (total[k] or 0) + v end end
  end
  local line = "statuses:"
  for k, v in pairs(total) do line = line .. " " .. k .. "=" .. v end
  io.write(line .. "\n")
end
