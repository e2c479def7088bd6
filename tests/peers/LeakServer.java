// A Java server with one handler method and one bug on one path, for the
// JVM tests (tests/tests/jvm.rs): `handle` reads each request to EOF, then
// closes short requests and forgets long ones, which stay in CLOSE_WAIT.
// `LeakServer ADDR PORT [TAG]` serves; `LeakServer client ADDR PORT COUNT
// LEN` makes COUNT connections, each sending LEN bytes and shutting down its
// side, then waiting (200 ms at most when the request is long) for the
// server's close.
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.util.ArrayList;
import java.util.List;

public class LeakServer {
    static final int SHORT = 16;
    static final List<Socket> forgotten = new ArrayList<>();

    static int handle(Socket s) throws IOException {
        InputStream in = s.getInputStream();
        byte[] buf = new byte[256];
        int total = 0;
        int n;
        while ((n = in.read(buf, 0, buf.length)) > 0) {
            total += n;
        }
        if (total <= SHORT) {
            s.close();
        } else {
            forgotten.add(s);
        }
        return total;
    }

    static void client(String host, int port, int count, int len) throws IOException {
        byte[] req = new byte[len];
        byte[] b = new byte[16];
        for (int i = 0; i < count; i++) {
            try (Socket c = new Socket(host, port)) {
                OutputStream out = c.getOutputStream();
                out.write(req);
                c.shutdownOutput();
                if (len > SHORT) {
                    c.setSoTimeout(200);
                }
                InputStream in = c.getInputStream();
                try {
                    while (in.read(b) > 0) {
                    }
                } catch (SocketTimeoutException e) {
                    // The server forgot this one.
                }
            }
        }
        System.out.println("done " + count);
    }

    public static void main(String[] a) throws Exception {
        if (a[0].equals("client")) {
            client(a[1], Integer.parseInt(a[2]), Integer.parseInt(a[3]), Integer.parseInt(a[4]));
            return;
        }
        ServerSocket ss = new ServerSocket(Integer.parseInt(a[1]), 128, InetAddress.getByName(a[0]));
        System.out.println("listening");
        System.out.flush();
        while (true) {
            handle(ss.accept());
        }
    }
}
