/** Identifiers every layer validates (config, API, store): the pattern is the one definition. */
export const IMEI_PATTERN = /^[0-9]{15}$/;
export const HOST_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
