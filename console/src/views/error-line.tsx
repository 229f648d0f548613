/** The error of a load or an action, read out by screen readers; nothing when there is none. */
export function ErrorLine({ message, inline }: { message: string | undefined; inline?: boolean }) {
  if (!message) return null;
  return inline ? (
    <span class="error" role="alert">
      {message}
    </span>
  ) : (
    <p class="error" role="alert">
      {message}
    </p>
  );
}
