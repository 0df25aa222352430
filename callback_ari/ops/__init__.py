"""Operations: the HTTP API and status page, the doctor and the reports."""
