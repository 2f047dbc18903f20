/** postgres-date (node-postgres' own timestamp parser) ships no types. */
declare module 'postgres-date' {
  /** A Date, ±Infinity for `infinity`, or null when the text is not a PostgreSQL date-time. */
  export default function parseDate(text: string): Date | number | null;
}
