-- Run once by the postgres image, when its data volume is new: the business data's database,
-- beside Temporal's own two (created by the temporal-admin-tools job).
CREATE ROLE corpsale LOGIN PASSWORD 'corpsale';
CREATE DATABASE corpsale OWNER corpsale;
