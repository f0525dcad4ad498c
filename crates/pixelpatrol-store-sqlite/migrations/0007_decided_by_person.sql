-- A decision made by a person says so: `decided_by` is `person` (it was
-- `manual`), beside `automatic`. Events already sent keep what they said.
UPDATE media SET decided_by = 'person' WHERE decided_by = 'manual';
