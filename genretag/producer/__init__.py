"""The producer: catalog ingests → validated ``TrackRef`` messages on the tracks topic."""
