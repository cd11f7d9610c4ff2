-- The bench's Lua comparison (bench/harness/configs.py lua_filters): the
-- guard's allow-path checks as a platform team would write them in Envoy's
-- Lua filter. Key → owner from a table (the plaintext keys: Envoy's Lua API
-- offers no hash function, so no SHA-256 of the secret), the owner's CIDR
-- allowlist against the TCP peer, the claimed tenant, the provider's path
-- prefix; then the client's credential and x-tokenhub-* headers removed and
-- the identity headers and the provider credential set. Refusals answer the
-- guard's statuses with a JSON body. No quotas, no checksum.

local KEYS = {
--{{KEYS}}
}
local PROVIDER_SECRET = "{{PROVIDER_SECRET}}"
local PATH_PREFIX = "/v1/"

local function ipv4(text)
  local a, b, c, d = string.match(text or "", "^(%d+)%.(%d+)%.(%d+)%.(%d+)")
  if not a then
    return nil
  end
  return ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256 + tonumber(d)
end

-- "a.b.c.d/n" → network number and block size, parsed once.
local function compile(cidrs)
  local out = {}
  for i, cidr in ipairs(cidrs) do
    local addr, len = string.match(cidr, "^([%d.]+)/(%d+)$")
    local size = 2 ^ (32 - tonumber(len))
    out[i] = {math.floor(ipv4(addr) / size), size}
  end
  return out
end

for _, owner in pairs(KEYS) do
  owner.cidrs = compile(owner.cidrs)
end

local function allowed(ip, cidrs)
  for _, c in ipairs(cidrs) do
    if math.floor(ip / c[2]) == c[1] then
      return true
    end
  end
  return false
end

local function refuse(handle, status, code)
  handle:respond({[":status"] = status, ["content-type"] = "application/json"},
    '{"error":{"type":"invalid_request_error","code":"' .. code .. '"}}')
end

local STRIPPED = {["authorization"] = true, ["x-api-key"] = true}

function envoy_on_request(handle)
  local headers = handle:headers()
  local auth = headers:get("authorization")
  local owner = auth and KEYS[string.match(auth, "^Bearer (.+)$") or ""]
  if not owner then
    return refuse(handle, "401", "invalid_api_key")
  end
  local ip = ipv4(handle:streamInfo():downstreamRemoteAddress())
  if not ip or not allowed(ip, owner.cidrs) then
    return refuse(handle, "403", "ip_not_allowed")
  end
  local claimed = headers:get("x-tokenhub-tenant")
  if claimed and claimed ~= owner.tenant then
    return refuse(handle, "403", "tenant_mismatch")
  end
  local path = headers:get(":path") or ""
  if string.sub(path, 1, #PATH_PREFIX) ~= PATH_PREFIX then
    return refuse(handle, "403", "scope_not_allowed")
  end
  -- Collected first: the header map cannot change while it is iterated.
  local strip = {}
  for name, _ in pairs(headers) do
    if STRIPPED[name] or string.sub(string.gsub(name, "_", "-"), 1, 11) == "x-tokenhub-" then
      strip[#strip + 1] = name
    end
  end
  for _, name in ipairs(strip) do
    headers:remove(name)
  end
  headers:replace("x-tokenhub-tenant", owner.tenant)
  headers:replace("x-tokenhub-sub-account", owner.sub_account)
  headers:replace("x-tokenhub-key-id", owner.key_id)
  headers:replace("x-tokenhub-region", owner.region)
  headers:replace("x-tokenhub-auth", "api_key")
  headers:replace("authorization", PROVIDER_SECRET)
end
