-- Queue configuration by tenant and campaign: transactional mail retries
-- sooner and gives up later than a newsletter.
local M = {}

local TENANTS = {
  acme = { egress_pool = 'bulk', retry_interval = '10min', max_age = '3d' },
  shop = { egress_pool = 'transactional', retry_interval = '2min', max_age = '1d' },
}

local CAMPAIGNS = {
  receipts = { retry_interval = '1min', max_retry_interval = '10min' },
  ['spring-news'] = { max_message_rate = '50/s' },
}

function M.queue_params(tenant, campaign)
  local params = { egress_pool = 'bulk', retry_interval = '20min', max_age = '7d' }
  for key, value in pairs(TENANTS[tenant] or {}) do params[key] = value end
  for key, value in pairs(CAMPAIGNS[campaign] or {}) do params[key] = value end
  return params
end

return M
