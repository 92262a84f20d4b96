-- SINR in dB (issue 16). The EC25 reports LTE SINR in `+QCSQ` as a raw 0-250 value (dB = raw/5 − 20,
-- docs/ec25.md, signal), and the rows stored before this migration held that raw value. From now on
-- `sinr` is dB everywhere (modems, modem_health, the API, the page, NOTIFY payloads); stored LTE rows
-- are converted, other rows had no meaningful SINR and become null. The raw value stays in the logs.
alter table modem_health alter column sinr type real
  using (case when technology = 'LTE' and sinr between 0 and 250 then round((sinr / 5.0 - 20)::numeric, 1) end);
alter table modems alter column sinr type real
  using (case when technology = 'LTE' and sinr between 0 and 250 then round((sinr / 5.0 - 20)::numeric, 1) end);
