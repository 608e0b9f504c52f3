-- The bank's consent of an open-banking connection as its last sync saw it
-- (its `consentStatus` and `validUntil`), and the expiry a warning was
-- already sent for (one warning per consent).
ALTER TABLE connections ADD COLUMN consent_status TEXT;
ALTER TABLE connections ADD COLUMN consent_valid_until DATE;
ALTER TABLE connections ADD COLUMN consent_warned_for DATE;
