"""The library every Audience Bridge service uses: settings, logging, messages, Kafka, Postgres, HTTP."""
