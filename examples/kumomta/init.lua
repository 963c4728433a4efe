--[[
A KumoMTA-style policy, as an operator's /opt/kumomta/etc/policy/init.lua
would be written, run unchanged by egress:

    egress check examples/kumomta/init.lua --domain gmail.com --tenant acme
    egress simulate scenarios/kumomta_policy.toml

Two egress sources in a weighted pool (ip-2 is warming up), per-provider
egress paths from providers.toml (computed once per domain and source with
kumo.memoize), queue configs by tenant and campaign from tenants.lua (a
module of the policy's own, found beside it), automation rules from
shaping.toml through KumoMTA's shaping helper, and the calls a real
init.lua makes at startup (listener, spool, logs), which egress maps to its
own command-line options (docs/KUMOMTA.md).  The source addresses are
loopback ones so the file is safe to try anywhere.
--]]
local kumo = require 'kumo'
local tenants = require 'tenants'
local shaping = require 'policy-extras.shaping'

-- KumoMTA's shaping helper: the automation rules of shaping.toml watch every
-- response (egress runs them in its engine; the publish/subscribe URLs name
-- KumoMTA's tsa-daemon, which egress does not need and never contacts).
local shaper = shaping:setup_with_automation {
  publish = { 'http://127.0.0.1:8008' },
  subscribe = { 'http://127.0.0.1:8008' },
  no_default_files = true,
  extra_files = { 'shaping.toml' },
}

kumo.on('init', function()
  kumo.start_esmtp_listener {
    listen = '127.0.0.1:2525',
    relay_hosts = { '127.0.0.1' },
  }
  kumo.define_spool { name = 'data', path = '/var/spool/kumomta/data' }
  kumo.define_spool { name = 'meta', path = '/var/spool/kumomta/meta' }
  kumo.configure_local_logs { log_dir = '/var/log/kumomta' }
  shaper.setup_publish()
end)

-- Per-provider limits, keyed by destination domain.
local PROVIDERS = {}
for name, provider in pairs(kumo.serde.toml_load 'providers.toml'.provider) do
  for _, domain in ipairs(provider.domains) do
    PROVIDERS[domain] = { name = name, path = provider.path }
  end
end

local SOURCES = {
  ['ip-1'] = '127.0.0.10',
  ['ip-2'] = '127.0.0.11',
}

kumo.on('get_egress_source', function(source_name)
  local address = SOURCES[source_name]
  if address then
    return kumo.make_egress_source {
      name = source_name,
      source_address = address,
      ehlo_domain = source_name .. '.mta.example.org',
    }
  end
  return kumo.make_egress_source { name = source_name }
end)

kumo.on('get_egress_pool', function(pool_name)
  if pool_name == 'bulk' then
    return kumo.make_egress_pool {
      name = 'bulk',
      entries = {
        { name = 'ip-1', weight = 3 },
        { name = 'ip-2', weight = 1 }, -- still warming up: a quarter of the traffic
      },
    }
  end
  return kumo.make_egress_pool {
    name = pool_name,
    entries = { { name = 'ip-1', weight = 1 } },
  }
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config(tenants.queue_params(tenant, campaign))
end)

-- The parameters of one egress path, computed once per (domain, source).
local path_params = kumo.memoize(function(domain, source_name)
  local provider = PROVIDERS[domain]
  local params = {
    connection_limit = 16,
    max_message_rate = '100/s',
    enable_tls = 'Opportunistic',
  }
  if provider then
    params.provider_name = provider.name
    for key, value in pairs(provider.path) do
      params[key] = value
    end
  end
  if source_name == 'ip-2' then
    -- a new IP: half the connections of an established one
    params.connection_limit = math.max(1, params.connection_limit // 2)
  end
  return params
end, { name = 'path_params', ttl = '5 minutes', capacity = 1000 })

kumo.on('get_egress_path_config', function(domain, source_name, site_name)
  return kumo.make_egress_path(path_params(domain, source_name))
end)
