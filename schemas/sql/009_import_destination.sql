-- Routing outbound files by where they come from (ingest, services/ingest/routing.py).
--
-- A file's name carries its master DPID (the data source whose IDs it holds) and the platform destination
-- that delivered it. A file feeds only the import audiences of its data source; an audience may also name
-- the one destination whose files feed it (NULL: any destination of its data source), for deployments
-- where several destinations deliver the same data source's IDs for the same segments.
ALTER TABLE shared_audience ADD COLUMN platform_destination_id bigint CHECK (platform_destination_id >= 1);

-- Deliveries filed unread (no import audience takes their data source) keep their reason in processed_file;
-- the status page lists the latest of them, and of the rejected ones, newest first.
CREATE INDEX processed_file_noted_idx ON processed_file (finished_at DESC) WHERE reason IS NOT NULL;
