import { useEffect, useState } from 'preact/hooks';
import type { Prism } from '../../src/sdk/browser.js';
import { href, parseRoute, type Route } from './route.js';
import type { Session } from './session.js';
import { LoginView } from './views/login.js';
import { ImagesView } from './views/images.js';
import { NodesView } from './views/nodes.js';
import { SandboxView } from './views/sandbox.js';
import { SandboxesView } from './views/sandboxes.js';
import { VolumesView } from './views/volumes.js';

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = (): void => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

export function App({ session }: { session: Session }) {
  const [state, setState] = useState({ client: session.client, notice: session.notice });
  useEffect(() => session.subscribe(setState), [session]);
  const route = useRoute();
  if (!state.client) return <LoginView session={session} notice={state.notice} />;
  return (
    <div class="layout">
      <header class="top">
        <span class="brand">Prism</span>
        <nav aria-label="Main">
          <NavLink route={{ page: 'sandboxes' }} current={route} label="Sandboxes" />
          <NavLink route={{ page: 'nodes' }} current={route} label="Nodes" />
          <NavLink route={{ page: 'images' }} current={route} label="Images" />
          <NavLink route={{ page: 'volumes' }} current={route} label="Volumes" />
        </nav>
        <button type="button" class="secondary" onClick={() => session.logout()}>
          Log out
        </button>
      </header>
      <main>
        <Page route={route} client={state.client} />
      </main>
    </div>
  );
}

function NavLink({ route, current, label }: { route: Route; current: Route; label: string }) {
  const active = current.page === route.page || (current.page === 'sandbox' && route.page === 'sandboxes');
  return (
    <a href={href(route)} aria-current={active ? 'page' : undefined}>
      {label}
    </a>
  );
}

function Page({ route, client }: { route: Route; client: Prism }) {
  switch (route.page) {
    case 'sandbox':
      return <SandboxView key={route.id} client={client} id={route.id} tab={route.tab} />;
    case 'nodes':
      return <NodesView client={client} />;
    case 'images':
      return <ImagesView client={client} />;
    case 'volumes':
      return <VolumesView client={client} />;
    default:
      return <SandboxesView client={client} />;
  }
}
