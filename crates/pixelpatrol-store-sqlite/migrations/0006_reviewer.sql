-- Who reviewed an item by hand in the dashboard (the API's manual reviews,
-- made with a key, name nobody).
ALTER TABLE media ADD COLUMN reviewer_id TEXT;
ALTER TABLE media ADD COLUMN reviewer_email TEXT;
