-- 0011: the compute service keeps each server as a part of its own
-- ("compute.servers:('<tenant>', '<server id>')"), no longer inside its tenant's part, whose
-- pickled layout changed with it. A tenant's part written before would load as an object this
-- version cannot use: the compute state starts empty after this upgrade (as the whole cloud
-- did after 0008's). The other services' parts are kept.
DELETE FROM cloud_part WHERE coll = 'compute.tenants';
