/**
 * The Content-Security-Policy allows styles from the console's own files and from elements carrying
 * the page's nonce. xterm.js creates <style> elements at run time (its theme and cell sizes) and has
 * no nonce option, so style elements created through this document get the nonce prismd put in the
 * page. Scripts get no such allowance.
 */
export function stampStyleNonce(doc: Document): void {
  const nonce = doc.querySelector<HTMLMetaElement>('meta[name="prism-style-nonce"]')?.content;
  if (!nonce || nonce.startsWith('__')) return; // served without prismd (a dev server): nothing to stamp
  const create = doc.createElement.bind(doc) as (tag: string, opts?: ElementCreationOptions) => HTMLElement;
  doc.createElement = ((tag: string, opts?: ElementCreationOptions) => {
    const el = create(tag, opts);
    if (tag.toLowerCase() === 'style') el.setAttribute('nonce', nonce);
    return el;
  }) as Document['createElement'];
}
